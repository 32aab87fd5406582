#!/usr/bin/env bash
# Look at the built book in a real browser, offline.
#
#   scripts/screenshot_book.sh [OUTDIR]      (default: book/_build/screenshots)
#
# Serves book/_build/html on a free localhost port (python -m http.server), takes headless
# Chromium screenshots of index.html and method.html (1280x1600) with every other host
# unresolvable, and fails if a screenshot is missing or empty, or if the method page never
# requested the vendored MathJax. The server's request log is kept as OUTDIR/http.log.
# Environment: CHROMIUM (default /usr/bin/chromium), PYTHON (default python3).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
html="$repo/book/_build/html"
out="$(mkdir -p "${1:-$repo/book/_build/screenshots}" && cd "${1:-$repo/book/_build/screenshots}" && pwd)"
chromium="${CHROMIUM:-/usr/bin/chromium}"
python="${PYTHON:-python3}"

[[ -f "$html/index.html" && -f "$html/method.html" ]] || {
  echo "screenshot_book.sh: $html has no index.html/method.html; build the book first" >&2; exit 1; }
[[ -x "$chromium" ]] || { echo "screenshot_book.sh: no Chromium at $chromium (set CHROMIUM)" >&2; exit 1; }

port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
profile="$(mktemp -d)"
"$python" -m http.server "$port" --bind 127.0.0.1 --directory "$html" >"$out/http.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$profile"' EXIT
for _ in $(seq 50); do
  "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/index.html', timeout=1)" 2>/dev/null && break
  sleep 0.2
done

status=0
for page in index method; do
  png="$out/$page.png"
  rm -f "$png"
  # --virtual-time-budget lets MathJax finish typesetting before the shot is taken;
  # --host-resolver-rules makes any request to another host fail, as it would offline.
  timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" \
    --user-data-dir="$profile" --virtual-time-budget=15000 --hide-scrollbars \
    --screenshot="$png" --window-size=1280,1600 "http://127.0.0.1:$port/$page.html" \
    >"$out/chromium-$page.log" 2>&1 || true
  if [[ -s "$png" ]]; then
    echo "screenshot: $png ($(stat -c %s "$png") bytes)"
  else
    echo "screenshot_book.sh: no screenshot of $page.html (see $out/chromium-$page.log)" >&2
    status=1
  fi
done

if ! grep -q "GET /_static/mathjax/tex-chtml.js" "$out/http.log"; then
  echo "screenshot_book.sh: the pages never requested _static/mathjax/tex-chtml.js (MathJax not loaded)" >&2
  status=1
fi
fonts="$(grep -c 'GET /_static/mathjax/output/chtml/fonts/' "$out/http.log" || true)"
echo "MathJax font files served: $fonts (0 means no math was typeset)"
exit "$status"
