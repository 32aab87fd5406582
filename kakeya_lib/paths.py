"""The repository's folders as pathlib constants, so no module writes ``../`` paths."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DATA_DIR = REPO_ROOT / "data"
# The results store; KAKEYA_RESULTS_DIR points every notebook and command at another one (e.g. a
# fresh store for recomputing every cell at one commit from a clean tree).
RESULTS_DIR = Path(os.environ.get("KAKEYA_RESULTS_DIR") or DATA_DIR / "results")
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
PAPER_DIR = REPO_ROOT / "paper"
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
# Ignored by git: converted models, captured tensors, other large generated files.
CACHE_DIR = REPO_ROOT / ".cache"
# Written by the render notebooks, read by the paper and the book (ignored by git).
GENERATED_DIR = PAPER_DIR / "generated"
EXECUTED_DIR = BOOK_DIR / "executed"
PARAMS_DIR = NOTEBOOKS_DIR / "params"
