#!/usr/bin/env bash
# Create (or bring up to date) a separate Python venv holding VBench for `tmd eval --vbench-python`,
# as described in docs/eval.md. VBench 0.1.5 pins transformers==4.33.2 and numpy<2, so it cannot share
# the pack's environment; `tmd eval` runs it there as a subprocess on the written video files
# (tmd_core/eval/vbench_driver.py) and never imports it. Idempotent: re-running it on a finished venv
# installs nothing new.
#
# usage: scripts/setup_vbench.sh VENV_DIR            (e.g. ~/vbench_env)
# env:   PYTHON   interpreter that creates the venv (default python3; VBench needs Python 3.8 to 3.11)
# out:   VENV_DIR with torch==2.14.1 and torchvision==0.29.1 (pinned as a pair, as scripts/setup_comfyui.sh
#        does), vbench==0.1.5 and its own requirements. Prints the interpreter to pass as --vbench-python.
#        No model weights are downloaded here: VBench fetches most dimensions' weights into
#        $VBENCH_CACHE_DIR (default ~/.cache/vbench) on first use; `tmd eval` lists what is missing.
set -euo pipefail

VENV=$(realpath -m "${1:?give the directory of the venv to create, e.g. scripts/setup_vbench.sh ~/vbench_env}")
PY=$VENV/bin/python

[[ -x "$PY" ]] || "${PYTHON:-python3}" -m venv "$VENV"
PIP=("$PY" -m pip --disable-pip-version-check)
Q=(-q)  # pip prints every satisfied requirement otherwise

# 1. torch first (torchvision must match it; VBench and pyiqa import both).
"${PIP[@]}" install "${Q[@]}" torch==2.14.1 torchvision==0.29.1

# 2. VBench with its pins; fairscale builds from source against the torch above.
"${PIP[@]}" install "${Q[@]}" wheel setuptools cython
"${PIP[@]}" install "${Q[@]}" --no-build-isolation fairscale
"${PIP[@]}" install "${Q[@]}" vbench==0.1.5 torch==2.14.1 torchvision==0.29.1

"$PY" - <<'PY'
import sys
import numpy, torch, transformers, vbench  # noqa: F401  (the imports are the check)
print(f"VBench venv ready: vbench 0.1.5, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"numpy {numpy.__version__}")
print(f"use: tmd eval --vbench-python {sys.executable} ...")
PY
