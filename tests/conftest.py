import os
import sys

# Triton decides at kernel decoration (first import of tmd_core.kernels) between CUDA and its CPU
# interpreter, so switch the interpreter on before any test imports the package. The dispatcher's
# "auto" still picks the PyTorch reference on CPU: only tests asking for backend="triton" use it.
os.environ.setdefault("TRITON_INTERPRET", "1")

import torch

_here = os.path.dirname(__file__)
# shared helpers (tests/helpers_*.py, tests/nodes/comfy_fakes.py) importable from every folder: pytest runs in
# importlib mode (test files in different folders may share a name, e.g. nodes/test_sampler.py)
sys.path[:0] = [_here, os.path.join(_here, "nodes"), os.path.join(_here, "integration")]
torch.set_num_threads(min(2, torch.get_num_threads()))
