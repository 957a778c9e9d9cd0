"""Backend choice of the fused gating ops: auto/triton/torch, errors that say what to do, one fallback log."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tmd_core.errors import ConfigError, InputError
from tmd_core.kernels import (
    BackendUnavailableError,
    available_backends,
    dispatch,
    gated_residual,
    gated_residual_ref,
    modulate,
    modulate_ref,
    resolve_backend,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_interpreter(monkeypatch):
    """This process as if TRITON_INTERPRET had not been set: triton importable, CPU unusable."""
    monkeypatch.setattr(dispatch, "TRITON_INTERPRET", False)
    monkeypatch.setattr(dispatch, "_fallback_logged", set())


def _inputs(D=24):
    gen = torch.Generator().manual_seed(3)
    return (
        torch.randn(2, 5, D, generator=gen),
        torch.randn(2, 5, D, generator=gen),
        torch.randn(2, D, generator=gen),
    )


def test_unknown_backend_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown kernel backend 'cuda'.*'auto', 'triton', 'torch'"):
        resolve_backend("cuda", "cpu")
    m, z, g = _inputs()
    with pytest.raises(ConfigError, match="unknown kernel backend"):
        gated_residual(m, z, g, torch.zeros(()), backend="Triton")


def test_explicit_triton_on_cpu_without_interpreter_raises(no_interpreter):
    with pytest.raises(BackendUnavailableError, match=r"(?s)on CPU.*TRITON_INTERPRET=1.*backend='torch'"):
        resolve_backend("triton", "cpu")
    x, _, shift = _inputs()
    with pytest.raises(BackendUnavailableError):
        modulate(x, shift, shift, backend="triton")


def test_auto_on_cpu_uses_the_reference_without_warning(no_interpreter, caplog):
    caplog.set_level(logging.INFO, logger=dispatch.__name__)
    m, z, g = _inputs()
    alpha = torch.tensor(0.2)
    for _ in range(3):
        h = gated_residual(m, z, g, alpha)
        y = modulate(m, g, g)
    assert torch.equal(h, gated_residual_ref(m, z, g, alpha))
    assert torch.equal(y, modulate_ref(m, g, g))
    # on CPU the reference IS the auto choice (the interpreter is only for explicit 'triton'): no warning
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_auto_on_cuda_without_triton_warns_and_explicit_triton_raises(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "TRITON_IMPORTABLE", False)
    monkeypatch.setattr(dispatch, "TRITON_IMPORT_ERROR", "ModuleNotFoundError: No module named 'triton'")
    monkeypatch.setattr(dispatch, "_fallback_logged", set())
    caplog.set_level(logging.INFO, logger=dispatch.__name__)
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("auto", "cuda:0") == "torch"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    with pytest.raises(BackendUnavailableError, match="pip install triton"):
        resolve_backend("triton", "cuda")


def test_auto_picks_triton_where_it_runs(monkeypatch):
    monkeypatch.setattr(dispatch, "TRITON_IMPORTABLE", True)
    monkeypatch.setattr(dispatch, "TRITON_INTERPRET", False)
    assert resolve_backend("auto", "cuda") == "triton"
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("torch", "cuda") == "torch"
    monkeypatch.setattr(dispatch, "TRITON_INTERPRET", True)
    assert resolve_backend("auto", "cpu") == "torch"  # the interpreter only runs when asked for
    assert resolve_backend("triton", "cpu") == "triton"
    # rows wider than one tile: the reference takes over, explicit triton says why
    assert resolve_backend("auto", "cuda", D=dispatch.triton_gate.MAX_BLOCK_D + 1) == "torch"
    with pytest.raises(BackendUnavailableError, match="row-wise kernel limit"):
        resolve_backend("triton", "cpu", D=dispatch.triton_gate.MAX_BLOCK_D + 1)


def test_available_backends_follows_the_import_time_flags(monkeypatch):
    monkeypatch.setattr(dispatch, "CUDA_AVAILABLE", False)
    monkeypatch.setattr(dispatch, "TRITON_INTERPRET", False)
    assert available_backends() == ("torch",)
    monkeypatch.setattr(dispatch, "TRITON_INTERPRET", True)
    assert available_backends() == ("triton", "torch")
    monkeypatch.setattr(dispatch, "TRITON_IMPORTABLE", False)
    assert available_backends() == ("torch",)


def test_triton_backend_runs_through_the_dispatcher(triton_device):
    m, z, g = (t.to(triton_device) for t in _inputs(D=40))
    alpha = torch.tensor(-0.4, device=triton_device)
    torch.testing.assert_close(
        gated_residual(m, z, g, alpha, backend="triton"),
        gated_residual_ref(m, z, g, alpha),
        atol=1e-5,
        rtol=1e-5,
    )
    torch.testing.assert_close(
        modulate(m, g, z[:, :1], backend="triton"), modulate_ref(m, g, z[:, :1]), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (
            (torch.zeros(2, 24), torch.zeros(2, 24), torch.zeros(2, 24), torch.zeros(())),
            r"m has shape \(2, 24\).*\(B, T, D\)",
        ),
        (
            (torch.zeros(2, 5, 24), torch.zeros(2, 5, 24), torch.zeros(2, 5, 24), torch.zeros(())),
            r"gate has shape \(2, 5, 24\).*\(B, 1, D\)",
        ),
        (
            (torch.zeros(2, 5, 24), torch.zeros(2, 5, 24), torch.zeros(3, 24), torch.zeros(())),
            r"B = 2 \(or 1\) and D = 24",
        ),
        ((torch.zeros(2, 5, 24), torch.zeros(2, 4, 24), torch.zeros(2, 24), torch.zeros(())), "z has shape"),
        (
            (torch.zeros(2, 5, 24), torch.zeros(2, 5, 24), torch.zeros(2, 24), torch.zeros(2)),
            "alpha is shape \\(2,\\).*one element",
        ),
        ((torch.zeros(2, 5, 24), torch.zeros(2, 5, 24), torch.zeros(2, 24), 0.0), "alpha is float"),
    ],
)
def test_gated_residual_rejects_bad_inputs_before_any_backend(args, message):
    with pytest.raises(InputError, match=message):
        gated_residual(*args, backend="torch")


def test_modulate_rejects_bad_inputs():
    x = torch.zeros(2, 5, 24)
    with pytest.raises(InputError, match=r"scale has shape \(2, 40\)"):
        modulate(x, torch.zeros(2, 24), torch.zeros(2, 40))
    with pytest.raises(InputError, match="eps"):
        modulate(x, torch.zeros(2, 24), torch.zeros(2, 24), eps=-1.0)


def test_gpu_less_process_without_interpreter_imports_and_falls_back():
    """A fresh CPU process without TRITON_INTERPRET: the library imports, auto runs the reference,
    explicit triton raises with guidance."""
    script = (
        "import torch\n"
        "from tmd_core.kernels import dispatch, gated_residual, gated_residual_ref, BackendUnavailableError\n"
        "assert not dispatch.TRITON_INTERPRET\n"
        "m = torch.randn(1, 3, 24); g = torch.randn(1, 24); a = torch.zeros(())\n"
        "assert torch.equal(gated_residual(m, m, g, a), gated_residual_ref(m, m, g, a))\n"
        "try:\n"
        "    gated_residual(m, m, g, a, backend='triton')\n"
        "except BackendUnavailableError as e:\n"
        "    print('raised:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert "raised: backend='triton' cannot run" in proc.stdout and "TRITON_INTERPRET=1" in proc.stdout
