"""The one adapter between ComfyUI's types and tmd_core's: folders, latents, conditioning, progress."""

from __future__ import annotations

import logging
import os

import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch

from ..tmd_core.errors import InputError

log = logging.getLogger("tmd")

TMD_FOLDER = "tmd"
TEACHER_FOLDER = "diffusion_models"


def register_model_folder() -> None:
    """models/tmd, added (not replacing) so paths from extra_model_paths.yaml stay."""
    folder_paths.add_model_folder_path(TMD_FOLDER, os.path.join(folder_paths.models_dir, TMD_FOLDER))


def checkpoint_choices() -> list[str]:
    """TMD checkpoints first, then Wan teachers from diffusion_models (prefixed so names never clash)."""
    tmd = folder_paths.get_filename_list(TMD_FOLDER)
    teachers = [f"{TEACHER_FOLDER}/{n}" for n in folder_paths.get_filename_list(TEACHER_FOLDER)]
    return [n for n in tmd + teachers if n.endswith(".safetensors")]


def resolve_checkpoint(name: str) -> str:
    """Full path of a listed checkpoint; names that escape their model folder are refused."""
    folder, rel = (TEACHER_FOLDER, name[len(TEACHER_FOLDER) + 1 :]) if name.startswith(TEACHER_FOLDER + "/") else (TMD_FOLDER, name)
    if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
        raise InputError(f"{name!r} points outside the {folder} model folder: pick a file listed in the menu")
    path = folder_paths.get_full_path(folder, rel)
    if path is None:
        raise InputError(f"{name!r} not found in the {folder} model folders {folder_paths.get_folder_paths(folder)}")
    return path


def wrap_model(model: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """Put a TMDModel under ComfyUI's memory management (loaded/offloaded like native models)."""
    model.latent_format = comfy.latent_formats.Wan21() if model.config.in_channels == 16 else None
    return comfy.model_patcher.ModelPatcher(
        model, load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def load_to_device(patcher) -> torch.device:
    comfy.model_management.load_models_gpu([patcher])
    return patcher.load_device


def context_from_conditioning(conditioning) -> torch.Tensor:
    """CONDITIONING [[Tensor[B, L, D], {...}], ...] -> Tensor[B, L, D] (the first entry; Wan uses one)."""
    if not conditioning or not isinstance(conditioning[0], (list, tuple)) or not torch.is_tensor(conditioning[0][0]):
        raise InputError("positive must be a CONDITIONING from a text encoder node (e.g. CLIPTextEncode)")
    if len(conditioning) > 1:
        log.warning("TMD: %d conditioning entries given; TMD uses the first (no area/timestep combining)", len(conditioning))
    return conditioning[0][0].float()


def latent_stats(channels: int):
    if channels != 16:
        return None
    fmt = comfy.latent_formats.Wan21()
    return fmt.latents_mean, fmt.latents_std


def normalise_latent(samples: torch.Tensor) -> torch.Tensor:
    """Raw VAE space -> model space: (x - mean) / std (Wan2.1); other channel counts pass through."""
    stats = latent_stats(samples.shape[1]) if samples.ndim == 5 else None
    if stats is None:
        return samples
    mean, std = (s.to(samples.device, samples.dtype) for s in stats)
    return (samples - mean) / std


def denormalise_latent(x: torch.Tensor) -> torch.Tensor:
    """Model space -> raw VAE space: x * std + mean, what VAEDecode expects."""
    stats = latent_stats(x.shape[1]) if x.ndim == 5 else None
    if stats is None:
        return x
    mean, std = (s.to(x.device, x.dtype) for s in stats)
    return x * std + mean


def sampling_callback(patcher, total: int, inner_steps: int):
    """tmd_core callback -> ComfyUI progress bar, latent preview and interrupt."""
    previewer = None
    if getattr(patcher.model, "latent_format", None) is not None:
        import latent_preview

        previewer = latent_preview.prepare_callback(patcher, total)
    pbar = None if previewer else comfy.utils.ProgressBar(total)

    def callback(i: int, j: int, x0: torch.Tensor) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        step = i * inner_steps + j
        if previewer is not None:
            previewer(step, x0, None, total)
        else:
            pbar.update_absolute(step + 1, total)

    return callback


def output_device() -> torch.device:
    return comfy.model_management.intermediate_device()
