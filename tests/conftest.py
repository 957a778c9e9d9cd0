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
# One thread: the tests' tensors are tiny, and on 2 cores shared with other jobs two OpenMP threads wait on
# each other (measured: 74 s with two threads, 11 s with one, for the same tests under a load of 3.9).
torch.set_num_threads(1)
