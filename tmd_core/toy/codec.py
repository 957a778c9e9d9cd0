"""Toy clips <-> model latents: the space-to-depth "VAE" plus a fixed normalisation (like Wan's mean/std)."""

from __future__ import annotations

import torch

from .latent import DEFAULT_FORMAT, LatentFormat, latent_to_pixels

# Clip values are in [-1, 1] with a black (-1) background: latents have mean ≈ -0.93 and std ≈ 0.35
# over the world. Normalising to roughly zero mean and unit variance, as Wan does with its 16-value
# latents_mean/std, keeps the flow-matching noise level meaningful.
LATENT_MEAN = -0.9
LATENT_STD = 0.35


def encode_clips(clips: torch.Tensor, fmt: LatentFormat = DEFAULT_FORMAT) -> torch.Tensor:
    """Tensor[B, 3, F, H, W] in [-1, 1] -> normalised latent Tensor[B, 192, F/4, H/4, W/4] (default format)."""
    return (fmt.pixels_to_latent(clips) - LATENT_MEAN) / LATENT_STD


def decode_latents(latents: torch.Tensor) -> torch.Tensor:
    """Normalised latent -> clips Tensor[B, 3, F, H, W] clamped to [-1, 1]."""
    return latent_to_pixels(latents.float() * LATENT_STD + LATENT_MEAN).clamp(-1, 1)
