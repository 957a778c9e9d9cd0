#!/usr/bin/env bash
# Screenshot the ComfyUI frontend of a running server with headless Chromium (Debian's package).
#
# usage: scripts/screenshot_frontend.sh [-p PORT | -u URL] [-o OUT.png] [-w WIDTHxHEIGHT] [-b BUDGET_MS]
#   -u URL     page to load (default http://127.0.0.1:$PORT/, PORT default 8188); a URL may point at
#              a workflow, e.g. ...?template=<name> style links the frontend understands
#   -o OUT     PNG to write (default ./comfyui_frontend.png)
#   -w WxH     window size (default 1600x1000)
#   -b MS      virtual-time budget for the page's scripts before the shot (default 30000)
# needs: chromium (apt-get update && apt-get install -y chromium); exits 1 when it is missing,
#        the server does not answer, or no PNG was written.
set -euo pipefail

PORT=8188
URL=""
OUT=comfyui_frontend.png
SIZE=1600x1000
BUDGET=30000
while [[ $# -gt 0 ]]; do
  case "$1" in
    -p) PORT=$2; shift 2 ;;
    -u) URL=$2; shift 2 ;;
    -o) OUT=$2; shift 2 ;;
    -w) SIZE=$2; shift 2 ;;
    -b) BUDGET=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
URL=${URL:-http://127.0.0.1:$PORT/}

BROWSER=$(command -v chromium || command -v chromium-browser || true)
[[ -n "$BROWSER" ]] || { echo "chromium not found: apt-get update && apt-get install -y chromium" >&2; exit 1; }
curl -s -o /dev/null --max-time 5 "$URL" || { echo "nothing answers at $URL: start ComfyUI first" >&2; exit 1; }

PROFILE=$(mktemp -d "${TMPDIR:-/tmp}/tmd_chromium.XXXXXX")   # fresh profile: no saved workflow state
trap 'rm -rf "$PROFILE"' EXIT
rm -f "$OUT"
"$BROWSER" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking \
  --hide-scrollbars --user-data-dir="$PROFILE" --window-size="${SIZE/x/,}" \
  --virtual-time-budget="$BUDGET" --screenshot="$(realpath -m "$OUT")" "$URL" > "$PROFILE/chromium.log" 2>&1 || true
[[ -s "$OUT" ]] || { echo "no screenshot written; chromium said:" >&2; tail -20 "$PROFILE/chromium.log" >&2; exit 1; }
echo "wrote $OUT"
