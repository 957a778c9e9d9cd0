"""Fixtures of the fused gating kernel tests; switches on Triton's CPU interpreter before triton loads."""

import os

# Triton decides at @triton.jit decoration (when tmd_core.kernels is first imported) whether kernels
# compile for CUDA or run in its CPU interpreter, so this must precede every import of the package.
# setdefault: TRITON_INTERPRET=0 on a CUDA machine tests the compiled kernels instead.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def triton_device() -> torch.device:
    """Device the Triton kernels can run on in this process, or skip."""
    from tmd_core.kernels import dispatch

    if not dispatch.TRITON_IMPORTABLE:
        pytest.skip(f"triton not importable: {dispatch.TRITON_IMPORT_ERROR}")
    if dispatch.TRITON_INTERPRET:
        return torch.device("cpu")
    if dispatch.CUDA_AVAILABLE:
        return torch.device("cuda")
    pytest.skip(
        "tmd_core.kernels was imported without TRITON_INTERPRET=1 and there is no CUDA device: "
        "run tests/kernels on its own, or export TRITON_INTERPRET=1"
    )


@pytest.fixture
def small_tiles(monkeypatch):
    """Force several token tiles per sample and several backward chunks, so the masked tails,
    the strided tile loop and the partial-sum reduction are all exercised on tiny tensors."""
    from tmd_core.kernels import triton_gate

    monkeypatch.setattr(triton_gate, "_TILE_ELEMS", 64)
    monkeypatch.setattr(triton_gate, "_CPU_CHUNKS", 2)
