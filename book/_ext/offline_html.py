"""Keep the built book loadable with no network.

Two jobs, both on the HTML builder:

* drop sphinx-thebe's scripts from every page: jupyter-book always loads that extension, and it
  writes a CDN address for the thebe bundle into each page (fetched only by a launch button,
  which this book does not have), so the pages would otherwise name an external script;
* after the build, scan every page for anything the browser would *load* from another host
  (``<script src>``, stylesheet / preload / icon ``<link href>``, ``<img|iframe|source|video|audio
  src>``, and addresses inside inline scripts) and warn for each one, so
  ``jupyter-book build -W`` fails instead of shipping a page that phones out. Plain ``<a href>``
  links are fine: they load nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

_EXTERNAL = r"""["']\s*(?:https?:)?//[^"'\s>]*"""
_LOADING_TAG = re.compile(rf"<(?:script|img|iframe|source|video|audio|embed)\b[^>]*\bsrc\s*=\s*{_EXTERNAL}", re.I)
_LINK = re.compile(r"<link\b[^>]*>", re.I)
_LOADING_REL = re.compile(r"""\brel\s*=\s*["'][^"']*\b(?:stylesheet|preload|modulepreload|prefetch|icon|manifest)\b""", re.I)
_LINK_EXTERNAL = re.compile(rf"\bhref\s*=\s*{_EXTERNAL}", re.I)
_INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.I | re.S)
_URL_IN_SCRIPT = re.compile(r"""["'`](?:https?:)?//[^"'`\s]+""")


def _is_thebe(asset: Any) -> bool:
    filename = str(getattr(asset, "filename", "") or "")
    body = str(getattr(asset, "attributes", {}).get("body", ""))
    return filename.endswith(("sphinx-thebe.js", "sphinx-thebe.css")) or "THEBE_JS_URL" in body


def _drop_thebe(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    for key in ("script_files", "css_files"):
        assets = context.get(key)
        if isinstance(assets, list):
            assets[:] = [a for a in assets if not _is_thebe(a)]


def external_loads(html: str) -> list[str]:
    """What a page would fetch from another host (an empty list for an offline page)."""
    found = [m.group(0)[:120] for m in _LOADING_TAG.finditer(html)]
    found += [tag[:120] for tag in _LINK.findall(html) if _LOADING_REL.search(tag) and _LINK_EXTERNAL.search(tag)]
    for body in _INLINE_SCRIPT.findall(html):
        found += [f"inline script: {url[1:121]}" for url in _URL_IN_SCRIPT.findall(body)]
    return found


def _check_pages(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for page in sorted(Path(app.outdir).rglob("*.html")):
        if "_static" in page.relative_to(app.outdir).parts:
            continue
        for item in external_loads(page.read_text(encoding="utf-8", errors="replace")):
            logger.warning("%s loads from another host: %s", page.relative_to(app.outdir), item)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("html-page-context", _drop_thebe, priority=900)
    app.connect("build-finished", _check_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
