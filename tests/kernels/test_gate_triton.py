"""Triton gated residual and AdaLN modulate against the PyTorch reference, forward and backward."""

import pytest
import torch

from tmd_core.kernels.reference import gated_residual_ref, modulate_ref
from tmd_core.kernels.triton_gate import gated_residual_triton, modulate_triton

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
}

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]


def _leaf(shape, dtype, device, gen, scale=1.0):
    return (torch.randn(shape, generator=gen) * scale).to(device=device, dtype=dtype).requires_grad_()


def _run(fn, inputs, grad_out):
    """Output and input gradients of fn on fresh leaf copies of `inputs`."""
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves]


def _assert_close(got, want, dtype, what):
    assert got.dtype == want.dtype and got.shape == want.shape, what
    torch.testing.assert_close(got.float(), want.float(), **TOL[dtype], msg=lambda m: f"{what}: {m}")


def _gated_inputs(B, T, D, dtype, device, gate_shape="bd", alpha_shape=()):
    gen = torch.Generator().manual_seed(1000 * T + D)
    Bg = 1 if gate_shape == "1d" else B
    gate_dims = (Bg, 1, D) if gate_shape == "b1d" else (Bg, D)
    return [
        _leaf((B, T, D), dtype, device, gen),
        _leaf((B, T, D), dtype, device, gen),
        _leaf(gate_dims, dtype, device, gen),
        _leaf(alpha_shape, torch.float32, device, gen, scale=0.7),  # fp32 master parameter
    ]


def _modulate_inputs(B, T, D, dtype, device, mod_shape="bd", mod_dtype=None):
    gen = torch.Generator().manual_seed(1000 * T + D + 1)
    Bm = 1 if mod_shape == "1d" else B
    mod_dims = (Bm, 1, D) if mod_shape == "b1d" else (Bm, D)
    x = _leaf((B, T, D), dtype, device, gen, scale=2.0)
    with torch.no_grad():  # non-zero row means, so the mean subtraction matters
        x += torch.arange(D, device=device, dtype=dtype) / D
    return [
        x,
        _leaf(mod_dims, mod_dtype or dtype, device, gen, 0.5),
        _leaf(mod_dims, mod_dtype or dtype, device, gen, 0.5),
    ]


@pytest.mark.parametrize("tiles", ["default", "small"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,D", [(1, 24), (7, 40), (37, 100), (5, 1)])
def test_gated_residual_matches_reference(triton_device, request, tiles, dtype, T, D):
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    inputs = _gated_inputs(2, T, D, dtype, triton_device)
    grad_out = torch.randn(2, T, D, generator=torch.Generator().manual_seed(7)).to(triton_device, dtype)
    h, grads = _run(gated_residual_triton, inputs, grad_out)
    h_ref, grads_ref = _run(gated_residual_ref, inputs, grad_out)
    _assert_close(h, h_ref, dtype, "h")
    for name, g, g_ref in zip(["dm", "dz", "dgate", "dalpha"], grads, grads_ref, strict=True):
        _assert_close(g, g_ref, torch.float32 if name == "dalpha" else dtype, name)


@pytest.mark.parametrize("tiles", ["default", "small"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,D", [(1, 24), (7, 40), (37, 100)])
def test_modulate_matches_reference(triton_device, request, tiles, dtype, T, D):
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    inputs = _modulate_inputs(2, T, D, dtype, triton_device)
    grad_out = torch.randn(2, T, D, generator=torch.Generator().manual_seed(8)).to(triton_device, dtype)
    y, grads = _run(modulate_triton, inputs, grad_out)
    y_ref, grads_ref = _run(modulate_ref, inputs, grad_out)
    _assert_close(y, y_ref, dtype, "y")
    for name, g, g_ref in zip(["dx", "dshift", "dscale"], grads, grads_ref, strict=True):
        _assert_close(g, g_ref, dtype, name)


@pytest.mark.parametrize("gate_shape,alpha_shape", [("b1d", (1,)), ("1d", ()), ("1d", (1,))])
def test_gated_residual_broadcast_shapes(triton_device, small_tiles, gate_shape, alpha_shape):
    """Gate [B, 1, D] or batch-broadcast [1, D], alpha 0-d or [1]: grads keep the input shapes."""
    inputs = _gated_inputs(3, 9, 24, torch.float32, triton_device, gate_shape, alpha_shape)
    grad_out = torch.randn(3, 9, 24, generator=torch.Generator().manual_seed(9)).to(triton_device)
    h, grads = _run(gated_residual_triton, inputs, grad_out)
    h_ref, grads_ref = _run(gated_residual_ref, inputs, grad_out)
    _assert_close(h, h_ref, torch.float32, "h")
    for t, g, g_ref in zip(inputs, grads, grads_ref, strict=True):
        assert g.shape == t.shape
        _assert_close(g, g_ref, torch.float32, f"grad of input {tuple(t.shape)}")


@pytest.mark.parametrize("mod_shape", ["b1d", "1d"])
def test_modulate_broadcast_shapes_and_fp32_modulation(triton_device, small_tiles, mod_shape):
    """Wan keeps shift/scale in fp32 while x is bf16: mixed dtypes, output and grads in input dtypes."""
    inputs = _modulate_inputs(3, 9, 40, torch.bfloat16, triton_device, mod_shape, mod_dtype=torch.float32)
    grad_out = torch.randn(3, 9, 40, generator=torch.Generator().manual_seed(10)).to(
        triton_device, torch.bfloat16
    )
    y, grads = _run(modulate_triton, inputs, grad_out)
    y_ref, grads_ref = _run(modulate_ref, inputs, grad_out)
    assert y.dtype == torch.bfloat16
    _assert_close(y, y_ref, torch.bfloat16, "y")
    for t, g, g_ref in zip(inputs, grads, grads_ref, strict=True):
        assert g.shape == t.shape and g.dtype == t.dtype
        _assert_close(g, g_ref, torch.bfloat16, f"grad of input {tuple(t.shape)}")


def test_fp16_forward_and_backward(triton_device):
    inputs = _gated_inputs(2, 5, 40, torch.float16, triton_device)
    grad_out = torch.randn(2, 5, 40, generator=torch.Generator().manual_seed(11)).to(
        triton_device, torch.float16
    )
    h, grads = _run(gated_residual_triton, inputs, grad_out)
    h_ref, grads_ref = _run(gated_residual_ref, inputs, grad_out)
    _assert_close(h, h_ref, torch.float16, "h")
    for g, g_ref in zip(grads[:3], grads_ref[:3], strict=True):
        _assert_close(g, g_ref, torch.float16, "grad")
    inputs = _modulate_inputs(2, 5, 40, torch.float16, triton_device)
    y, grads = _run(modulate_triton, inputs, grad_out)
    y_ref, grads_ref = _run(modulate_ref, inputs, grad_out)
    _assert_close(y, y_ref, torch.float16, "y")
    for g, g_ref in zip(grads, grads_ref, strict=True):
        _assert_close(g, g_ref, torch.float16, "grad")


def test_only_requested_gradients_are_computed(triton_device):
    """A frozen alpha/gate (requires_grad=False) gets no grad; the others still match."""
    m, z, gate, alpha = _gated_inputs(2, 7, 24, torch.float32, triton_device)
    gate.requires_grad_(False)
    alpha.requires_grad_(False)
    grad_out = torch.randn(2, 7, 24, generator=torch.Generator().manual_seed(12)).to(triton_device)
    _, grads = _run(gated_residual_triton, [m, z, gate, alpha], grad_out)
    _, grads_ref = _run(gated_residual_ref, [m, z, gate, alpha], grad_out)
    assert grads[2] is None and grads[3] is None
    _assert_close(grads[1], grads_ref[1], torch.float32, "dz")
    x, shift, scale = _modulate_inputs(2, 7, 24, torch.float32, triton_device)
    x.requires_grad_(False)
    _, grads = _run(modulate_triton, [x, shift, scale], grad_out)
    _, grads_ref = _run(modulate_ref, [x, shift, scale], grad_out)
    assert grads[0] is None
    _assert_close(grads[2], grads_ref[2], torch.float32, "dscale")


def test_empty_token_axis(triton_device):
    m = torch.zeros(2, 0, 24, device=triton_device, requires_grad=True)
    gate = torch.ones(2, 24, device=triton_device, requires_grad=True)
    alpha = torch.zeros((), device=triton_device, requires_grad=True)
    gated_residual_triton(m, m, gate, alpha).sum().backward()
    assert gate.grad.abs().sum() == 0 and alpha.grad == 0
    y = modulate_triton(m.detach(), gate, gate)
    assert y.shape == (2, 0, 24)


def test_gradcheck_float64(triton_device):
    """Finite-difference check of both autograd.Functions; the kernels compute in fp64 for fp64 inputs.

    fast_mode checks a random projection of the Jacobian: far fewer interpreted launches."""
    gen = torch.Generator().manual_seed(13)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(triton_device).requires_grad_()

    gated_inputs = (leaf(2, 5, 6), leaf(2, 5, 6), leaf(2, 6), leaf(1))
    assert torch.autograd.gradcheck(gated_residual_triton, gated_inputs, fast_mode=True)
    modulate_inputs = (leaf(2, 5, 6), leaf(2, 1, 6), leaf(1, 6))
    assert torch.autograd.gradcheck(modulate_triton, modulate_inputs, fast_mode=True)
