"""Checks on latents and text contexts before they reach the DiT, with messages a user can act on."""

from __future__ import annotations

import torch

from .errors import InputError


def check_latent_and_context(config, x: torch.Tensor, context: torch.Tensor, what: str = "latent") -> None:
    """Raise InputError unless `x` (Tensor[B, C, F, H, W]) and `context` (Tensor[B', L, text_dim]) fit `config`.

    Args:
        config: the transformer's config (in_channels, text_dim, patch_size).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(
            f"the {what} must be 5-D [batch, channels, frames, height, width], got {shape}: "
            "pass a video latent (e.g. from EmptyHunyuanLatentVideo), not an image latent"
        )
    c = config.in_channels
    if x.shape[1] != c:
        raise InputError(
            f"the model has {c} latent channels, the {what} has {x.shape[1]}: "
            f"use a latent made for this model (Wan2.1 VAE latents have 16 channels)"
        )
    p_t, p_h, p_w = config.patch_size
    f, h, w = x.shape[2:]
    if f % p_t or h % p_h or w % p_w:
        raise InputError(
            f"{what} frames/height/width {f}x{h}x{w} must be divisible by the patch size {p_t}x{p_h}x{p_w}"
        )
    if not isinstance(context, torch.Tensor) or context.ndim != 3:
        shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
        raise InputError(f"the text context must be 3-D [batch, tokens, width], got {shape}")
    if context.shape[-1] != config.text_dim:
        raise InputError(
            f"the model expects text embeddings of width {config.text_dim}, the context has width "
            f"{context.shape[-1]}: encode the prompt with the text encoder this model was trained with "
            "(umt5-xxl, 4096, for Wan2.1)"
        )
    if context.shape[0] not in (1, x.shape[0]):
        raise InputError(f"context batch {context.shape[0]} does not match the {what} batch {x.shape[0]}")
