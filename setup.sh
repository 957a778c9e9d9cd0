#!/usr/bin/env bash
# Set-up on a fresh machine (idempotent, quick when nothing changed): a virtual environment in .venv
# with a CPU build of torch, this package's requirements and the package itself (editable).
# ComfyUI users do NOT need this: the pack uses ComfyUI's own environment (see README).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.tmd-setup-stamp
want=$(cat requirements.txt pyproject.toml setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch is installed here, never through requirements.txt (it would replace a ComfyUI install's torch)
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==${TMD_TORCH_VERSION:-2.13.0}"
  .venv/bin/pip install -q -r requirements.txt pytest ruff
  .venv/bin/pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
