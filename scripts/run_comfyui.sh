#!/usr/bin/env bash
# Start a real ComfyUI server (CPU only) from a source checkout, with extra custom-node packs,
# wait until it answers, and print its PID. (Same as shared/scripts/run_comfyui.sh, kept in the repo
# so tests/integration runs where shared/ is absent.)
#
# usage: run_comfyui.sh [-p PORT] [-o OUTPUT_DIR] [-t TIMEOUT_S] [-l LOGFILE] PATH [PATH...] [-- EXTRA main.py ARGS]
#   PATH  either a custom-nodes folder (a folder whose sub-folders are packs, like ComfyUI/custom_nodes)
#         or a single pack folder (it has an __init__.py); a single pack gets symlinked into a temp folder.
# env:  COMFYUI_PATH (the ComfyUI checkout, required), COMFYUI_PYTHON (default $COMFYUI_PATH/.venv/bin/python)
# out:  last stdout lines are  PID=<pid>  PORT=<port>  LOG=<logfile>  URL=<url>; exit 0 when ready,
#       1 when the server died or did not answer in time (it is then killed and its log tail printed).
# stop: kill <pid>     (the server has no children; SIGTERM is enough)
set -euo pipefail

COMFY_DIR=${COMFYUI_PATH:?set COMFYUI_PATH to a ComfyUI source checkout}
PY=${COMFYUI_PYTHON:-$COMFY_DIR/.venv/bin/python}
PORT=8188
OUTDIR=""
TIMEOUT=180
LOG=""
PATHS=()
EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    -p) PORT=$2; shift 2 ;;
    -o) OUTDIR=$2; shift 2 ;;
    -t) TIMEOUT=$2; shift 2 ;;
    -l) LOG=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) PATHS+=("$1"); shift ;;
  esac
done

[[ -f "$COMFY_DIR/main.py" ]] || { echo "no ComfyUI checkout at $COMFY_DIR" >&2; exit 1; }
[[ -x "$PY" ]] || { echo "no python at $PY (set COMFYUI_PYTHON)" >&2; exit 1; }

if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/system_stats"; then
  echo "something already answers on 127.0.0.1:$PORT; stop it first or use -p" >&2; exit 1
fi

RUNDIR=$(mktemp -d "${TMPDIR:-/tmp}/comfy_run.XXXXXX")
LOG=${LOG:-$RUNDIR/server.log}
YAML=$RUNDIR/extra_model_paths.yaml
: > "$YAML"
i=0
for p in "${PATHS[@]}"; do
  p=$(realpath "$p")
  [[ -d "$p" ]] || { echo "not a folder: $p" >&2; exit 1; }
  if [[ -f "$p/__init__.py" ]]; then          # a single pack: give it a folder of its own
    mkdir -p "$RUNDIR/packs$i"
    ln -s "$p" "$RUNDIR/packs$i/$(basename "$p")"
    p="$RUNDIR/packs$i"
  fi
  printf 'extra%d:\n    custom_nodes: %s\n' "$i" "$p" >> "$YAML"
  i=$((i + 1))
done

ARGS=(main.py --cpu --listen 127.0.0.1 --port "$PORT")
[[ -s "$YAML" ]] && ARGS+=(--extra-model-paths-config "$YAML")
[[ -n "$OUTDIR" ]] && { mkdir -p "$OUTDIR"; ARGS+=(--output-directory "$(realpath "$OUTDIR")"); }
ARGS+=("${EXTRA[@]+"${EXTRA[@]}"}")

cd "$COMFY_DIR"
T0=$(date +%s.%N)
nohup "$PY" "${ARGS[@]}" > "$LOG" 2>&1 < /dev/null &
PID=$!

ready=0
for _ in $(seq 1 $((TIMEOUT * 2))); do
  if ! kill -0 "$PID" 2>/dev/null; then break; fi
  if curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:$PORT/system_stats" | grep -q 200; then
    ready=1; break
  fi
  sleep 0.5
done

if [[ $ready -ne 1 ]]; then
  echo "ComfyUI did not become ready (pid $PID); log tail:" >&2
  tail -40 "$LOG" >&2 || true
  kill "$PID" 2>/dev/null || true
  exit 1
fi
failed=$(grep -c "(IMPORT FAILED)" "$LOG" || true)
echo "ready after $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $T0}") s; custom-node import failures: $failed (see log)"
echo "PID=$PID"
echo "PORT=$PORT"
echo "LOG=$LOG"
echo "URL=http://127.0.0.1:$PORT"
