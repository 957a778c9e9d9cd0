#!/usr/bin/env bash
# Create (or bring up to date) the Python venv of a ComfyUI source checkout and install this
# pack's dependencies into it, as described in docs/host.md §11. Idempotent: re-running it
# on a finished venv installs nothing new.
#
# usage: scripts/setup_comfyui.sh [COMFYUI_PATH]      (default: $COMFYUI_PATH)
# env:   PYTHON   interpreter that creates the venv (default python3)
# out:   $COMFYUI_PATH/.venv with torch==2.14.1 (CPU), torchvision==0.29.1, ComfyUI's requirements
#        minus torch/torchvision/torchaudio, requests, and this pack's requirements.txt;
#        $COMFYUI_PATH/.venv/tmd_requirements_dry_run.txt: pip's dry run of requirements.txt, which
#        must name no torch package (checked: the script fails if it does).
set -euo pipefail

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
DRY=$VENV/tmd_requirements_dry_run.txt
"${PIP[@]}" install --dry-run -r "$PACK_DIR/requirements.txt" > "$DRY" 2>&1
if grep -E '^Would install' "$DRY" | tr ' ' '\n' | grep -qE '^(torch|torchvision|torchaudio)-[0-9]'; then
  echo "the pack's requirements.txt would change the torch install:" >&2
  grep -E '^Would install' "$DRY" >&2
  exit 1
fi
"${PIP[@]}" install "${Q[@]}" -r "$PACK_DIR/requirements.txt"

"$PY" - <<'PY'
import torch, torchvision
print(f"ComfyUI venv ready: torch {torch.__version__}, torchvision {torchvision.__version__}")
PY
