"""Fusion layer and gap time embedding of the decoupled student (docs/method.md §2, paper App. A.1)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .kernels import gated_residual, modulate

FUSION_KINDS = ("gated", "concat")


class GatedFusion(nn.Module):
    """h = m + σ(α) · g(s) ⊙ MLP(modulate(LN(PE(y_s)), s))  (docs/method.md §2.2, "gated", the default).

    The last MLP projection is zero-initialised and α = 0, so at initialisation h == m for any y_s:
    the student equals the teacher (the decoupling invariant). The AdaLN modulation starts at
    shift = scale = 0, gate = 1 so that the zero-initialised projection receives gradient at once.
    """

    def __init__(self, dim: int, eps: float = 1e-6, backend: str = "auto"):
        super().__init__()
        self.eps = eps
        self.backend = backend
        self.ada = nn.Linear(dim, 3 * dim)  # SiLU(emb(s)) -> shift, scale, gate
        self.fc1 = nn.Linear(dim, dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.zeros(()))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.zeros_(self.ada.weight)
        with torch.no_grad():
            self.ada.bias.zero_()
            self.ada.bias[2 * self.ada.out_features // 3 :] = 1.0  # gate starts at 1
        nn.init.zeros_(self.fc2.weight)  # Δ = 0 at init
        nn.init.zeros_(self.fc2.bias)
        nn.init.zeros_(self.alpha)

    def forward(self, m: torch.Tensor, pe: torch.Tensor, temb_s: torch.Tensor) -> torch.Tensor:
        """Args: m, pe (Tensor[B, T, D]) backbone features and patch-embedded y_s; temb_s (Tensor[B, D]) emb(s).
        Returns: h (Tensor[B, T, D])."""
        shift, scale, gate = self.ada(nn.functional.silu(temb_s.to(self.ada.weight.dtype))).chunk(3, dim=-1)
        z = modulate(pe, shift.to(pe.dtype), scale.to(pe.dtype), eps=self.eps, backend=self.backend)
        z = self.fc2(self.act(self.fc1(z.to(self.fc1.weight.dtype))))
        return gated_residual(m, z.to(m.dtype), gate.to(m.dtype), self.alpha, backend=self.backend)


class ConcatFusion(nn.Module):
    """h = W [m, PE(y_s)] + b with W = [I, N(0, 0.01²)] at init (docs/method.md §2.2, the "concat" option).

    Close to, not exactly, the teacher at init (the y_s half is small noise, not zero).
    """

    def __init__(self, dim: int, init_std: float = 0.01):
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self):
        dim = self.proj.out_features
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.weight[:, :dim] = torch.eye(dim)
            self.proj.weight[:, dim:].normal_(0.0, self.init_std)
            self.proj.bias.zero_()

    def forward(self, m: torch.Tensor, pe: torch.Tensor, temb_s: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([m, pe.to(m.dtype)], dim=-1).to(self.proj.weight.dtype)).to(m.dtype)


def make_fusion(kind: str, dim: int) -> nn.Module:
    if kind == "gated":
        return GatedFusion(dim)
    if kind == "concat":
        return ConcatFusion(dim)
    from .errors import ConfigError

    raise ConfigError(f"unknown fusion kind {kind!r}: expected one of {FUSION_KINDS}")


class GapTimeEmbedding(nn.Module):
    """emb_gap(s - r): a copy of the teacher's time MLP whose last layer is zero (App. A.1).

    The head is conditioned on emb(s) + emb_gap(s - r); at init that sum is emb(s).
    """

    def __init__(self, time_embedder: nn.Module):
        super().__init__()
        self.time_embedder = copy.deepcopy(time_embedder)  # diffusers TimestepEmbedding: linear_1, act, linear_2
        nn.init.zeros_(self.time_embedder.linear_2.weight)
        nn.init.zeros_(self.time_embedder.linear_2.bias)

    def forward(self, gap_proj: torch.Tensor) -> torch.Tensor:
        """Args: gap_proj (Tensor[B, freq_dim]) sinusoidal projection of 1000 (s - r). Returns Tensor[B, D]."""
        w = self.time_embedder.linear_1.weight
        return self.time_embedder(gap_proj.to(w.dtype))
