"""The two latent worlds the pack samples in, Wan2.1 and the toy world (docs/design.md §8, docs/toy_world.md).

Facts only, no models: which world a teacher belongs to, the latent shape of a video in it, and Wan2.1's
latent normalisation. Both worlds have 16 latent channels and 4x time, 8x space VAEs; they differ in the
text width (umt5's 4096 against the toy encoder's 32). The toy package (tmd_core/toy/) takes its sizes
from here, so training code can ask these questions without importing it.
"""

from __future__ import annotations

import torch

from .errors import InputError

# Wan2.1's VAE: 16 channels, 4 frames x 8x8 pixels per latent cell (the first frame alone).
WAN21_CHANNELS = 16
WAN21_TEMPORAL = 4
WAN21_SPATIAL = 8
# Per-channel statistics of Wan2.1 VAE latents: the model works on (z - mean) / std. The same 16 values are
# ComfyUI's comfy.latent_formats.Wan21 and diffusers' AutoencoderKLWan config (latents_mean / latents_std).
WAN21_LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)  # fmt: skip
WAN21_LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)  # fmt: skip

# The toy world (docs/toy_world.md): 16 channels as Wan2.1, 4 frames x 8x8 pixels per latent cell, and
# its fixed text encoder's 32-wide embeddings.
TOY_LATENT_CHANNELS = 16
TOY_TEMPORAL = 4
TOY_SPATIAL = 8
TOY_TEXT_DIM = 32


def is_toy_teacher(teacher) -> bool:
    """True for a model of the toy world: 16 latent channels and 32-wide toy text embeddings
    (Wan2.1 has 16 channels too, but 4096-wide umt5 text). Any object with a diffusers-style `config`."""
    return teacher.config.in_channels == TOY_LATENT_CHANNELS and teacher.config.text_dim == TOY_TEXT_DIM


def is_toy_config(config: dict) -> bool:
    """`is_toy_teacher` for a transformer config dict (e.g. `describe_checkpoint(path)["transformer_config"]`)."""
    return config.get("in_channels") == TOY_LATENT_CHANNELS and config.get("text_dim") == TOY_TEXT_DIM


def is_wan21(model) -> bool:
    """True for a Wan2.1 model: 16 latent channels, and not the toy world's."""
    return model.config.in_channels == WAN21_CHANNELS and not is_toy_teacher(model)


def latent_shape_for(teacher, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(C, F, H, W) of the latent of a `frames` x `height` x `width` video for this teacher's VAE.

    Wan2.1 (16 channels): ((frames - 1) // 4 + 1, height / 8, width / 8), like EmptyHunyuanLatentVideo;
    the toy world (16 channels, 32-wide text): its VAE's (frames / 4, height / 8, width / 8).
    """
    cfg = teacher.config
    if is_toy_teacher(teacher):
        if frames % TOY_TEMPORAL:
            raise InputError(f"toy videos have a multiple of {TOY_TEMPORAL} frames (one latent frame per "
                             f"{TOY_TEMPORAL}), got {frames}")
        cell = TOY_SPATIAL
        shape = (TOY_LATENT_CHANNELS, frames // TOY_TEMPORAL, height // cell, width // cell)
    elif cfg.in_channels == WAN21_CHANNELS:
        cell = WAN21_SPATIAL
        shape = (WAN21_CHANNELS, (frames - 1) // WAN21_TEMPORAL + 1, height // cell, width // cell)
    else:
        raise InputError(
            f"the teacher has {cfg.in_channels} latent channels: data can be made for Wan2.1 and the toy world "
            "(16 channels) only; give a data folder made with this teacher instead"
        )
    step = cell * cfg.patch_size[1]
    if height % step or width % step or min(shape[1:]) < 1:
        raise InputError(f"width and height must be positive multiples of {step} for this teacher, got {width}x{height}")
    return shape


def _wan21_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim != 5 or x.shape[1] != WAN21_CHANNELS:
        raise InputError(f"Wan2.1 latents are [B, {WAN21_CHANNELS}, F, H, W], got {list(x.shape)}")
    mean = torch.tensor(WAN21_LATENT_MEAN).view(1, WAN21_CHANNELS, 1, 1, 1).to(x.device, x.dtype)
    std = torch.tensor(WAN21_LATENT_STD).view(1, WAN21_CHANNELS, 1, 1, 1).to(x.device, x.dtype)
    return mean, std


def wan21_to_vae_space(x: torch.Tensor) -> torch.Tensor:
    """Normalised model space -> raw Wan2.1 VAE space: x * std + mean (what a Wan2.1 VAE decodes).

    Args:
        x (Tensor[B, 16, F, H, W]): latents as the samplers return them.
    """
    mean, std = _wan21_stats(x)
    return x * std + mean


def wan21_from_vae_space(z: torch.Tensor) -> torch.Tensor:
    """Raw Wan2.1 VAE space -> normalised model space: (z - mean) / std (inverse of `wan21_to_vae_space`)."""
    mean, std = _wan21_stats(z)
    return (z - mean) / std
