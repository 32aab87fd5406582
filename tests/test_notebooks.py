"""The notebooks' contract: one tagged, typed and commented parameters cell; profile files that only
set parameters the notebook has; thin notebooks (logic in kakeya_lib); outputs stripped in git."""

from __future__ import annotations

import ast
import json
import re

import pytest
import yaml

from kakeya_lib.paths import NOTEBOOKS_DIR, PARAMS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
PROFILES = ("smoke", "paper")
PARAM_LINE = re.compile(r"^(\w+): (\w+) = (.+?)  # \S.*$")


def load(path):
    return json.loads(path.read_text())


def params_of(nb) -> dict[str, str]:
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    out = {}
    for line in "".join(cells[0]["source"]).splitlines():
        m = PARAM_LINE.match(line)
        assert m, f"parameter line must read 'name: type = value  # comment': {line!r}"
        name, typ, value = m.groups()
        ast.literal_eval(value)  # a literal papermill can override
        out[name] = typ
    return out


def test_the_expected_notebooks_exist():
    stems = {p.stem for p in NOTEBOOKS}
    assert {"exp-stages", "exp-mse", "exp-e2e", "render-stages", "render-mse", "render-e2e"} <= stems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_typed_and_commented(path):
    params = params_of(load(path))
    assert params["profile"] == "str"
    if path.stem.startswith("exp-"):
        assert params["force"] == "bool"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
@pytest.mark.parametrize("profile", PROFILES)
def test_profile_files_only_set_known_parameters(path, profile):
    file = PARAMS_DIR / profile / f"{path.stem}.yaml"
    if not file.exists():
        assert path.stem.startswith("render-"), f"compute notebook {path.stem} has no {profile} parameter file"
        return
    values = yaml.safe_load(file.read_text())
    unknown = set(values) - set(params_of(load(path)))
    assert not unknown, f"{file.name} sets parameters the notebook does not have: {sorted(unknown)}"
    assert values["profile"] == profile


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs_and_stay_thin(path):
    nb = load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs before committing"
    for c in code:
        tree = ast.parse("".join(c["source"]))
        for node in ast.walk(tree):
            assert not isinstance(node, ast.ClassDef), "classes belong in kakeya_lib"
            if isinstance(node, ast.FunctionDef):
                assert len(node.body) <= 4, f"function {node.name} in {path.stem} is logic: move it to kakeya_lib"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_can_read_every_parameter(path):
    # papermill's inspector skips any line with more than one "=" (then warns "unknown parameter"
    # for it): spec strings with "=" belong in the profile files or in kakeya_lib constants.
    from papermill.translators import PythonTranslator

    nb = load(path)
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    found = {p.name for p in PythonTranslator.inspect({"source": "".join(cell["source"])})}
    assert found == set(params_of(nb))
