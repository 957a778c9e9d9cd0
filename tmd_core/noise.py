"""Seeded Gaussian noise from a CPU generator, so one seed gives one video on any device."""

from __future__ import annotations

import operator

import torch

from .errors import InputError

GENERATOR_SEED_MAX = 2**64 - 1  # what torch.Generator.manual_seed accepts


def _seed(seed) -> int:
    try:
        value = None if isinstance(seed, bool) else operator.index(seed)  # ints and numpy ints, not floats
    except TypeError:
        value = None
    if value is None or not 0 <= value <= GENERATOR_SEED_MAX:
        raise InputError(f"seed must be an integer from 0 to 2**64-1, got {seed!r}: negative and larger seeds are not "
                         "taken modulo anything (they would repeat the noise of another seed)")
    return value


def make_noise(shape, seed: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape`, drawn on the CPU with `torch.Generator().manual_seed(seed)`.

    Args:
        shape: e.g. (B, C, F, H, W).
        seed: an int in 0..2**64-1. torch's CPU generator uses its low 32 bits (seeds that differ by a
            multiple of 2**32 draw the same noise, as in ComfyUI's KSampler), so user-facing seed inputs
            accept 0..2**32-1 only (tmd_core.validation.check_seed).
    Returns:
        Tensor[shape] on `device` in `dtype`.
    """
    g = torch.Generator(device="cpu").manual_seed(_seed(seed))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def cpu_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(_seed(seed))
