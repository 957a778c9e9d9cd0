"""Seeded Gaussian noise from a CPU generator, so one seed gives one video on any device."""

from __future__ import annotations

import torch


def make_noise(shape, seed: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape`, drawn on the CPU with `torch.Generator().manual_seed(seed)`.

    Args:
        shape: e.g. (B, C, F, H, W).
        seed: any int (taken modulo 2**64).
    Returns:
        Tensor[shape] on `device` in `dtype`.
    """
    g = torch.Generator(device="cpu").manual_seed(int(seed) % (2**64))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def cpu_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed) % (2**64))
