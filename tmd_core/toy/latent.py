"""The toy world's latent space: sizes and the DiT that fits it (the VAE itself is in autoencoder.py).

An 8-frame 32×32 clip becomes a latent [16, 2, 4, 4] (4× time, 8× space, 16 channels, as Wan2.1's VAE);
the toy DiT uses a (1, 1, 1) patch, so one clip is 32 tokens of 16 values each for a width of 128.
"""

from __future__ import annotations

from ..errors import InputError
from ..worlds import TOY_LATENT_CHANNELS as LATENT_CHANNELS  # 16, as Wan2.1
from ..worlds import TOY_SPATIAL as SPATIAL  # pixels per latent pixel
from ..worlds import TOY_TEMPORAL as TEMPORAL  # frames per latent frame
from .text import TEXT_DIM
from .world import DEFAULT_FRAMES, DEFAULT_SIZE


def latent_shape(frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> tuple[int, int, int, int]:
    """(C, F', H', W') of the latent of one [3, frames, size, size] clip."""
    if frames % TEMPORAL or size % SPATIAL or frames < TEMPORAL or size < SPATIAL:
        raise InputError(f"a toy clip of {frames} frames of {size}×{size} pixels does not divide into latent cells of "
                         f"{TEMPORAL} frames × {SPATIAL}×{SPATIAL} pixels: use positive multiples")
    return (LATENT_CHANNELS, frames // TEMPORAL, size // SPATIAL, size // SPATIAL)


LATENT_SHAPE = latent_shape()  # (16, 2, 4, 4): one 8-frame 32×32 clip


def suggested_transformer_config(num_layers: int = 12, dim: int = 128, head_dim: int = 64, ffn_dim: int = 384) -> dict:
    """Keyword arguments for diffusers' `WanTransformer3DModel` sized for the toy world.

    Only the channel counts, patch and text width are dictated by the toy formats; the rest is the size
    measured to train in minutes on a CPU. Use `WanTransformer3DModel(**suggested_transformer_config())`.
    """
    return dict(
        patch_size=(1, 1, 1),  # one token per latent pixel: 16 values per token, width 128
        num_attention_heads=dim // head_dim,
        attention_head_dim=head_dim,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=ffn_dim,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    )
