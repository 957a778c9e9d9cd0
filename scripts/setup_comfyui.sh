#!/usr/bin/env bash
# Create (or bring up to date) the Python venv of a ComfyUI source checkout and install this
# pack's dependencies into it, as described in docs/host.md §11. Idempotent: re-running it
# on a finished venv installs nothing new.
#
# usage: scripts/setup_comfyui.sh [--gguf] [COMFYUI_PATH]      (default: $COMFYUI_PATH)
#   --gguf  also install city96's ComfyUI-GGUF (the GGUF loader users run Wan with) into
#           custom_nodes/ComfyUI-GGUF at the tested commit, and its `gguf` package into the venv; only
#           tests/integration/test_native_gguf.py needs it (docs/host.md §15). A ComfyUI-GGUF folder already
#           there (any case) is kept as it is.
# env:   PYTHON   interpreter that creates the venv (default python3)
# out:   $COMFYUI_PATH/.venv with torch==2.14.1 (CPU), torchvision==0.29.1, ComfyUI's requirements
#        minus torch/torchvision/torchaudio, requests, and this pack's requirements.txt;
#        $COMFYUI_PATH/.venv/tmd_requirements_dry_run.txt: pip's dry run of requirements.txt, which
#        must name no torch package (checked: the script fails if it does; likewise for --gguf).
set -euo pipefail

GGUF=0
POSITIONAL=()
for arg in "$@"; do
  case "$arg" in
    --gguf) GGUF=1 ;;
    *) POSITIONAL+=("$arg") ;;
  esac
done
set -- "${POSITIONAL[@]+"${POSITIONAL[@]}"}"
GGUF_REPO=https://github.com/city96/ComfyUI-GGUF
GGUF_COMMIT=795e45156ece99afbc3efef911e63fcb46e6a20d  # tested (December 2025 snapshot)
GGUF_PIP=gguf==0.19.0                                  # tested; ComfyUI-GGUF asks for gguf>=0.13.0

COMFY_DIR=$(realpath "${1:-${COMFYUI_PATH:?give the ComfyUI checkout as argument or COMFYUI_PATH}}")
PACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$COMFY_DIR/.venv
PY=$VENV/bin/python

[[ -f "$COMFY_DIR/main.py" && -f "$COMFY_DIR/requirements.txt" ]] \
  || { echo "no ComfyUI checkout at $COMFY_DIR (expected main.py and requirements.txt)" >&2; exit 2; }

[[ -x "$PY" ]] || "${PYTHON:-python3}" -m venv "$VENV"
PIP=("$PY" -m pip --disable-pip-version-check)
Q=(-q)  # pip prints every satisfied requirement otherwise

# 1. torch first: the CPU-only torch 2.13 wheel cannot load torchvision, so pin the pair.
"${PIP[@]}" install "${Q[@]}" torch==2.14.1 torchvision==0.29.1

# 2. ComfyUI's own requirements, without the torch family (already there; torchaudio is optional).
REQ=$(mktemp)
trap 'rm -f "$REQ"' EXIT
grep -vE '^torch(audio|vision)?$' "$COMFY_DIR/requirements.txt" > "$REQ"
"${PIP[@]}" install "${Q[@]}" -r "$REQ" requests

# 3. this pack's requirements, after checking they would not touch the torch install.
# install_keeping_torch WHAT DRY_RUN_FILE PIP_ARGS...: pip install, after a dry run shows it leaves torch alone.
install_keeping_torch() {
  local what=$1 dry=$2
  shift 2
  "${PIP[@]}" install --dry-run "$@" > "$dry" 2>&1
  if grep -E '^Would install' "$dry" | tr ' ' '\n' | grep -qE '^(torch|torchvision|torchaudio)-[0-9]'; then
    echo "$what would change the torch install:" >&2
    grep -E '^Would install' "$dry" >&2
    exit 1
  fi
  "${PIP[@]}" install "${Q[@]}" "$@"
}
install_keeping_torch "the pack's requirements.txt" "$VENV/tmd_requirements_dry_run.txt" -r "$PACK_DIR/requirements.txt"

# 4. optional (--gguf): ComfyUI-GGUF and its gguf package, for the GGUF tests.
if [[ $GGUF -eq 1 ]]; then
  GGUF_DIR=$(find "$COMFY_DIR/custom_nodes" -mindepth 1 -maxdepth 1 -type d -iname comfyui-gguf | head -n 1)
  if [[ -z "$GGUF_DIR" ]]; then
    GGUF_DIR=$COMFY_DIR/custom_nodes/ComfyUI-GGUF
    git clone -q "$GGUF_REPO" "$GGUF_DIR"
    git -C "$GGUF_DIR" -c advice.detachedHead=false checkout -q "$GGUF_COMMIT"
  fi
  install_keeping_torch "$GGUF_PIP" "$VENV/tmd_gguf_dry_run.txt" "$GGUF_PIP"
  echo "ComfyUI-GGUF: $GGUF_DIR"
fi

"$PY" - <<'PY'
import torch, torchvision
print(f"ComfyUI venv ready: torch {torch.__version__}, torchvision {torchvision.__version__}")
PY
