"""Atomic file writes that several processes (e.g. sweep workers calibrating the same artifact at
once) can do side by side: each writes its own temporary sibling, then renames it into place."""

from __future__ import annotations

import os
from pathlib import Path


def tmp_sibling(path: Path, suffix: str = "") -> Path:
    """A temporary name next to ``path``, private to this process (``NAME.<pid>.tmp<suffix>``)."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp{suffix}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    tmp = tmp_sibling(path)
    tmp.write_text(text)
    os.replace(tmp, path)
