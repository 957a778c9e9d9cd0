"""Toy clips <-> normalised model latents through the toy VAE (autoencoder.py), like Wan's VAE + mean/std."""

from __future__ import annotations

import torch


def _vae(vae):
    if vae is None:
        from .shipped import default_vae

        return default_vae()
    if isinstance(vae, (str, bytes)) or hasattr(vae, "__fspath__"):
        from .shipped import load_vae_cached

        return load_vae_cached(str(vae))
    return vae


def encode_clips(clips: torch.Tensor, vae=None) -> torch.Tensor:
    """Tensor[B, 3, F, H, W] in [-1, 1] -> normalised latent Tensor[B, 16, F/4, H/8, W/8].

    Args:
        vae: a ToyVAE, a path to one, or None for the shipped VAE.
    """
    return _vae(vae).encode(clips.float())


def decode_latents(latents: torch.Tensor, vae=None) -> torch.Tensor:
    """Normalised latent Tensor[B, 16, F', H', W'] -> clips Tensor[B, 3, 4F', 8H', 8W'] clamped to [-1, 1]."""
    return _vae(vae).decode(latents.float().cpu())
