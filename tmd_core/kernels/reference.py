"""PyTorch ground truth of the fusion layer's gated residual and AdaLN modulate (docs/method.md §2.2)."""

import torch
import torch.nn.functional as F


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype the fused ops compute in: fp64 if any input is fp64 (gradcheck), else fp32.

    bf16/fp16 inputs are upcast because the token reductions (LayerNorm statistics, the per-sample
    gate/shift/scale gradients) lose too much in half precision; Wan's FP32LayerNorm does the same.
    """
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def per_sample(v: torch.Tensor) -> torch.Tensor:
    """View a per-sample vector `[B, D]` or `[B, 1, D]` as `[B, 1, D]` so it broadcasts over tokens."""
    return v.reshape(v.shape[0], 1, v.shape[-1])


def gated_residual_ref(
    m: torch.Tensor, z: torch.Tensor, gate: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """Gated residual of the fusion layer: `h = m + σ(α) · g(s) ⊙ z`.

    Args:
        m (Tensor[B, T, D]): backbone token features.
        z (Tensor[B, T, D]): fusion MLP output for the noisy inner sample `y_s`.
        gate (Tensor[B, D] or Tensor[B, 1, D]): per-sample gate `g(s)`, broadcast over tokens
            (batch 1 broadcasts over the batch too).
        alpha (Tensor[] or Tensor[1]): learnable gate logit; `α = 0` at init gives `σ(α) = 0.5`.

    Returns:
        Tensor[B, T, D] in `m.dtype` (computed in fp32, or fp64 if any input is fp64).
    """
    acc = compute_dtype(m, z, gate, alpha)
    sigma = torch.sigmoid(alpha.to(acc).reshape(()))
    # docs/method.md §2.2: h = m + σ(α) · Δ, Δ = g(s) ⊙ z
    h = m.to(acc) + sigma * per_sample(gate).to(acc) * z.to(acc)
    return h.to(m.dtype)


def modulate_ref(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """AdaLN modulate: `LayerNorm(x) · (1 + scale) + shift`, LayerNorm without affine parameters.

    Args:
        x (Tensor[B, T, D]): token features.
        shift (Tensor[B, D] or Tensor[B, 1, D]): per-sample shift, broadcast over tokens.
        scale (Tensor[B, D] or Tensor[B, 1, D]): per-sample scale, broadcast over tokens.
        eps: LayerNorm epsilon (Wan uses 1e-6).

    Returns:
        Tensor[B, T, D] in `x.dtype`; the normalisation and modulation run in fp32 (fp64 if any
        input is fp64), like Wan's FP32LayerNorm followed by `.type_as(x)`.
    """
    acc = compute_dtype(x, shift, scale)
    x_hat = F.layer_norm(x.to(acc), (x.shape[-1],), eps=eps)
    y = x_hat * (1 + per_sample(scale).to(acc)) + per_sample(shift).to(acc)
    return y.to(x.dtype)
