#!/usr/bin/env bash
# Vendor MathJax 3 for the book, so the built HTML renders math with no external URL.
#
#   book/vendor_mathjax.sh
#
# Installs the npm package mathjax@3 once into <repo>/.cache/npm (skipped when present) and
# copies its es5/ folder to book/_vendor/mathjax/, which _config.yml lists in html_static_path
# (Sphinx copies it to _build/html/_static/mathjax/; mathjax_path points at tex-chtml.js there).
# Both folders are ignored by git. Needs node/npm and the npm registry on the first run only.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$repo/.cache/npm"
src="$prefix/node_modules/mathjax/es5"
dest="$repo/book/_vendor/mathjax"

if [[ ! -f "$src/tex-chtml.js" ]]; then
  command -v npm >/dev/null || { echo "vendor_mathjax.sh: npm not found; install node/npm (e.g. apt-get install npm)" >&2; exit 1; }
  mkdir -p "$prefix"
  npm install --no-save --no-audit --no-fund --prefix "$prefix" mathjax@3
fi
test -f "$src/tex-chtml.js" || { echo "vendor_mathjax.sh: $src/tex-chtml.js missing after npm install" >&2; exit 1; }

if [[ -f "$dest/tex-chtml.js" ]] && diff -rq "$src" "$dest" >/dev/null; then
  echo "MathJax already vendored in book/_vendor/mathjax"
  exit 0
fi
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
cp -r "$src" "$dest"
version="$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$prefix/node_modules/mathjax/package.json" | head -1)"
echo "MathJax $version vendored in book/_vendor/mathjax ($(du -sh "$dest" | cut -f1))"
