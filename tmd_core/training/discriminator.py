"""Conv3D discriminator heads on frozen-teacher block features (docs/method.md §5, GAN term; paper's best head)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .teacher_features import check_layers, default_disc_layers, teacher_features

__all__ = ["Conv3DHead", "Discriminator", "default_disc_layers", "teacher_features"]


def _groups(channels: int, target: int = 32) -> int:
    """GroupNorm groups: up to 32, at least 4 channels each (a 1-channel group over a 1x1x1 grid is 0)."""
    return math.gcd(channels, min(target, max(1, channels // 4)))


class Conv3DHead(nn.Module):
    """Features Tensor[B, D, F, H, W] -> logit Tensor[B]: Conv3d/GroupNorm/SiLU, downsampling, 1x1x1 to
    one channel, averaged over the remaining grid (a patch discriminator whose verdicts are averaged)."""

    def __init__(self, in_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(in_dim, hidden, kernel_size=3, padding=1),
            nn.GroupNorm(_groups(hidden), hidden),
            nn.SiLU(),
            nn.Conv3d(hidden, hidden, kernel_size=3, stride=2, padding=1),  # halves F, H, W (size 1 stays 1)
            nn.GroupNorm(_groups(hidden), hidden),
            nn.SiLU(),
            nn.Conv3d(hidden, 1, kernel_size=1),
        )

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        w = self.net[0].weight
        return self.net(feat.to(w.dtype)).float().mean(dim=(1, 2, 3, 4))


class Discriminator(nn.Module):
    """One Conv3DHead per teacher block in `layers`; the logit is the mean of the heads' logits.

    Args:
        dim: the teacher's hidden width D (1536 for Wan2.1 1.3B).
        layers: 0-based teacher blocks whose outputs feed the heads.
        hidden: channels of every head (default min(256, D)).
    """

    def __init__(self, dim: int, layers, hidden: int | None = None):
        super().__init__()
        self.layers = tuple(int(i) for i in layers)
        hidden = int(hidden or min(256, dim))
        self.heads = nn.ModuleList(Conv3DHead(dim, hidden) for _ in self.layers)

    @classmethod
    def from_teacher(cls, teacher, layers=None, hidden: int | None = None) -> Discriminator:
        """Heads sized for `teacher`; layers default to (L/2, 3L/4, L-1), e.g. (15, 22, 29) for L = 30."""
        L = len(teacher.blocks)
        layers = check_layers(layers if layers else default_disc_layers(L), L)
        p = next(teacher.parameters())
        return cls(teacher.patch_embedding.out_channels, layers, hidden).to(p.device)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """features: one Tensor[B, D, F', H', W'] per layer (teacher_features order). Returns Tensor[B]."""
        return torch.stack([head(f) for head, f in zip(self.heads, features)]).mean(0)

    def logits(self, teacher, x_t: torch.Tensor, t, context: torch.Tensor) -> torch.Tensor:
        """D(x_t): teacher features at (x_t, t, c) through the heads. Returns Tensor[B] float32."""
        return self(teacher_features(teacher, x_t, t, context, self.layers))
