"""The bibliography's contract: every citation of the paper and of the book resolves to one entry
of ``paper/references.bib`` (the single source both read), and every entry names its authors,
title and year. Fast: no LaTeX, no Sphinx; pybtex comes with the book's sphinxcontrib-bibtex."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pybtex.database import BibliographyData, parse_file

from kakeya_lib.paths import BOOK_DIR, PAPER_DIR

BIB_PATH = PAPER_DIR / "references.bib"
TEX_FILES = [PAPER_DIR / "main.tex", *sorted((PAPER_DIR / "sections").glob("*.tex"))]
BOOK_PAGES = sorted(BOOK_DIR.glob("*.md"))

# \cite, \citep, \citet*, ... with optional [..] arguments; keys are comma-separated.
TEX_CITE = re.compile(r"\\cite[a-zA-Z]*\*?(?:\[[^\]]*\]){0,2}\{([^}]*)\}")
# MyST roles {cite}`a,b`, {cite:p}`a`, {cite:t}`a`, ...
MYST_CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")
# An entry's opening line: @type{key, -- @comment / @preamble / @string carry no key.
BIB_ENTRY = re.compile(r"^@(\w+)\s*\{\s*([^,\s]+)\s*,", re.M)
NOT_ENTRIES = {"comment", "preamble", "string"}

MIN_ENTRIES = 15
# Cited before the paper moved to BibTeX: these keys must keep resolving.
LEGACY_KEYS = {"hmt2011", "lloyd1982", "max1960", "duda2013", "turboquant2025", "kivi2024", "quipsharp2024"}


def _keys(pattern: re.Pattern[str], files: list[Path]) -> dict[str, list[str]]:
    """Cited key -> the files citing it (comments stripped from .tex files first)."""
    found: dict[str, list[str]] = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".tex":
            text = re.sub(r"(?<!\\)%.*", "", text)  # a commented-out \cite is not a citation
        for group in pattern.findall(text):
            for key in (k.strip() for k in group.split(",")):
                if key:
                    found.setdefault(key, []).append(path.name)
    return found


@pytest.fixture(scope="module")
def bib() -> BibliographyData:
    return parse_file(str(BIB_PATH), bib_format="bibtex")


def test_the_bib_has_no_duplicate_keys_and_enough_entries():
    keys = [key for kind, key in BIB_ENTRY.findall(BIB_PATH.read_text(encoding="utf-8"))
            if kind.lower() not in NOT_ENTRIES]
    # BibTeX keys are case-insensitive: "KIVI2024" and "kivi2024" would clash.
    lowered = [k.lower() for k in keys]
    duplicates = sorted({k for k in lowered if lowered.count(k) > 1})
    assert not duplicates, f"duplicate keys in {BIB_PATH.name}: {duplicates}"
    assert len(keys) >= MIN_ENTRIES, f"{len(keys)} entries, want at least {MIN_ENTRIES}"


def test_every_entry_has_author_title_and_year(bib: BibliographyData):
    assert len(bib.entries) >= MIN_ENTRIES
    for key, entry in bib.entries.items():
        assert entry.persons.get("author"), f"{key}: no author"
        for field in ("title", "year"):
            assert entry.fields.get(field, "").strip(), f"{key}: no {field}"
        assert re.fullmatch(r"\d{4}", entry.fields["year"].strip()), f"{key}: year {entry.fields['year']!r}"


def test_the_keys_cited_before_bibtex_are_kept(bib: BibliographyData):
    assert LEGACY_KEYS <= set(bib.entries.keys())


def test_every_paper_citation_resolves(bib: BibliographyData):
    cited = _keys(TEX_CITE, TEX_FILES)
    assert cited, "the paper cites nothing: did the \\cite pattern break?"
    missing = {k: v for k, v in cited.items() if k not in bib.entries}
    assert not missing, f"cited in the paper but not in {BIB_PATH.name}: {missing}"


def test_every_book_citation_resolves(bib: BibliographyData):
    cited = _keys(MYST_CITE, BOOK_PAGES)
    assert cited, "the book cites nothing: did the {cite} pattern break?"
    missing = {k: v for k, v in cited.items() if k not in bib.entries}
    assert not missing, f"cited in the book but not in {BIB_PATH.name}: {missing}"


def test_the_paper_uses_bibtex_and_the_book_reads_the_same_file():
    main = (PAPER_DIR / "main.tex").read_text(encoding="utf-8")
    assert re.search(r"^\\bibliography\{references\}", main, re.M), "main.tex must \\bibliography{references}"
    assert "thebibliography" not in main
    assert not (PAPER_DIR / "sections" / "references.tex").exists(), "the hand-written list is gone"
    config = yaml.safe_load((BOOK_DIR / "_config.yml").read_text(encoding="utf-8"))
    bibfiles = [(BOOK_DIR / p).resolve() for p in config.get("bibtex_bibfiles", [])]
    assert bibfiles == [BIB_PATH.resolve()], f"the book must read {BIB_PATH}, not {bibfiles}"
