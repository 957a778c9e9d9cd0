"""The PyTorch ground truth of the fused gating ops against independent formulations (Wan, docs/method.md §2.2)."""

import torch
from torch import nn

from tmd_core.kernels.reference import gated_residual_ref, modulate_ref


def test_modulate_ref_matches_wan_fp32_layernorm():
    """Wan: `(FP32LayerNorm(x.float()) * (1 + scale) + shift).type_as(x)`, LayerNorm without affine."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 40, generator=gen).to(torch.bfloat16) * 3 + 1
    shift, scale = torch.randn(2, 1, 40, generator=gen), torch.randn(2, 1, 40, generator=gen)
    norm = nn.LayerNorm(40, elementwise_affine=False, eps=1e-6)
    want = (norm(x.float()) * (1 + scale) + shift).type_as(x)
    got = modulate_ref(x, shift, scale.squeeze(1))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_modulate_ref_normalises_each_token():
    """With shift = scale = 0 every token has mean 0 and (biased) variance 1 over features."""
    x = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(1)) * 4 + 7
    y = modulate_ref(x, torch.zeros(2, 24), torch.zeros(2, 24))
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-4, rtol=0)


def test_gated_residual_ref_formula_and_init_invariant():
    """h = m + σ(α) g ⊙ z per sample; a zero gate (zero-initialised last projection) leaves m exactly."""
    gen = torch.Generator().manual_seed(2)
    m, z = torch.randn(3, 4, 24, generator=gen), torch.randn(3, 4, 24, generator=gen)
    gate = torch.randn(3, 24, generator=gen)
    alpha = torch.tensor(0.0)  # α = 0 at init: σ(α) = 1/2
    h = gated_residual_ref(m, z, gate, alpha)
    torch.testing.assert_close(h[1, 2], m[1, 2] + 0.5 * gate[1] * z[1, 2])
    assert torch.equal(gated_residual_ref(m, torch.zeros_like(z), gate, alpha), m)


def test_gated_residual_ref_alpha_gradient_is_sigmoid_derivative():
    m = torch.zeros(1, 2, 3)
    z = torch.ones(1, 2, 3)
    gate = torch.full((1, 3), 2.0)
    alpha = torch.tensor([0.3], requires_grad=True)
    gated_residual_ref(m, z, gate, alpha).sum().backward()
    s = torch.sigmoid(torch.tensor(0.3))
    # d/dα Σ σ(α) · 2 over 6 elements = 12 σ(α)(1 - σ(α))
    torch.testing.assert_close(alpha.grad, (12 * s * (1 - s)).reshape(1))
