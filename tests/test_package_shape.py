"""The package's shape: modules import each other without cycles (function-level imports
included), and a module over ~400 lines says which one concept it holds.

A cycle hidden behind a function-level import still ties two concepts together and breaks the
moment someone hoists the import; the graph below counts every ``import`` statement between the
package's own modules, wherever it sits.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import kakeya_lib

PACKAGE_DIR = Path(kakeya_lib.__file__).parent


def module_files() -> dict[str, Path]:
    """``{"kakeya_lib.llm.plan": path, ...}`` (packages under their own name)."""
    out = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.with_suffix("").relative_to(PACKAGE_DIR.parent).parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        deps |= {c for c in candidates if c in known and c != name}
    return deps


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    files = module_files()
    graph = {name: imported_modules(name, path, set(files)) for name, path in files.items()}
    assert "kakeya_lib.llm.calibration_inputs" in graph["kakeya_lib.llm.qprecond"]  # the walk sees imports
    assert cycles(graph) == []


def test_the_row_layout_is_one_module_without_torch():
    # the codecs use kakeya_lib.layout, and "stages/, codecs/, container.py never import torch"
    import ast as _ast

    tree = _ast.parse((PACKAGE_DIR / "layout.py").read_text())
    top_level = [n for n in tree.body if isinstance(n, (_ast.Import, _ast.ImportFrom))]
    assert all("torch" not in _ast.unparse(n) for n in top_level)


def test_a_long_module_names_its_one_concept():
    for name, path in module_files().items():
        text = path.read_text()
        if len(text.splitlines()) > 420:
            doc = ast.get_docstring(ast.parse(text)) or ""
            assert "One concept" in doc, f"{name} has {len(text.splitlines())} lines: split it, or say its one concept"


NOTEBOOK_DIR = PACKAGE_DIR.parent / "notebooks"
MAX_NOTEBOOK_CODE_LINES = 50  # notebooks call library functions; logic lives (and is tested) in kakeya_lib


def notebook_code_lines(path: Path) -> int:
    """Non-blank, non-comment lines over a notebook's code cells."""
    cells = json.loads(path.read_text())["cells"]
    lines = ("".join(c["source"]).splitlines() for c in cells if c["cell_type"] == "code")
    return sum(1 for cell in lines for line in cell if line.strip() and not line.strip().startswith("#"))


def test_notebooks_stay_thin():
    counts = {p.name: notebook_code_lines(p) for p in sorted(NOTEBOOK_DIR.glob("*.ipynb"))}
    assert counts, f"no notebooks under {NOTEBOOK_DIR}"
    fat = {name: n for name, n in counts.items() if n > MAX_NOTEBOOK_CODE_LINES}
    assert not fat, f"notebooks over {MAX_NOTEBOOK_CODE_LINES} code lines (move the logic into kakeya_lib): {fat}"
