"""Frozen-teacher block features for the Conv3D discriminator (docs/method.md §5, GAN term)."""

from __future__ import annotations

import torch

from ..errors import ConfigError, InputError
from ..model import embed_inputs


def default_disc_layers(num_layers: int) -> tuple[int, ...]:
    """Blocks (0-based, output taken after the block) ≈ (L/2, 3L/4, L-1): (15, 22, 29) for L = 30."""
    return tuple(sorted({num_layers // 2, (3 * num_layers) // 4, num_layers - 1}))


def check_layers(layers, num_layers: int) -> tuple[int, ...]:
    layers = tuple(int(i) for i in layers)
    if not layers or any(not 0 <= i < num_layers for i in layers):
        raise ConfigError(
            f"discriminator layers must be block indices in 0..{num_layers - 1} for a {num_layers}-block "
            f"teacher, got {layers}: set stage2.disc_layers or leave it empty for (L/2, 3L/4, L-1)"
        )
    return layers


def unpatchify_tokens(h: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Token features Tensor[B, T, D] (T = F'·H'·W' in patch-embedding order) -> Tensor[B, D, F', H', W']."""
    B, T, D = h.shape
    return h.transpose(1, 2).reshape(B, D, *grid)


def teacher_features(teacher, x_t: torch.Tensor, t, context: torch.Tensor, layers) -> list[torch.Tensor]:
    """Hidden states of the teacher after the blocks `layers`, unpatchified to the token grid.

    Runs Wan's embeddings and blocks 0..max(layers) only (the rest is not needed). Gradients flow
    to the input x_t when grad mode is on (the generator's GAN loss); the teacher itself must be
    frozen (every parameter requires_grad False), which is checked.

    Args:
        teacher: diffusers WanTransformer3DModel, frozen.
        x_t (Tensor[B, C, F, H, W]): noisy latent at time t.
        t: float or Tensor[B] in [0, 1].
        context (Tensor[B or 1, L_text, text_dim]).
        layers: block indices (0-based), in the order the features are returned.
    Returns:
        list of Tensor[B, D, F / p_t, H / p_h, W / p_w], one per layer, in the teacher's dtype.
    """
    if any(p.requires_grad for p in teacher.parameters()):
        raise InputError(
            "the teacher must be frozen for the GAN features (its weights would collect gradients): "
            "call teacher.requires_grad_(False) once after loading it"
        )
    layers = check_layers(layers, len(teacher.blocks))
    B, _, F, H, W = x_t.shape
    p_t, p_h, p_w = teacher.config.patch_size
    # 1. rope, patches, text and time embeddings, as in WanTransformer3DModel.forward
    h, ctx, tproj, rotary = embed_inputs(teacher, x_t, t, context)
    # 2. blocks up to the last requested one, keeping the requested outputs
    wanted, feats = set(layers), {}
    ckpt = torch.is_grad_enabled() and teacher.gradient_checkpointing
    for i, block in enumerate(teacher.blocks[: max(layers) + 1]):
        if ckpt:
            h = teacher._gradient_checkpointing_func(block, h, ctx, tproj, rotary)
        else:
            h = block(h, ctx, tproj, rotary)
        if i in wanted:
            feats[i] = h
    grid = (F // p_t, H // p_h, W // p_w)
    return [unpatchify_tokens(feats[i], grid) for i in layers]
