"""TMDDistill's validation previews (docs/host.md §14): the student on fixed prompts every K steps, decoded,
saved in the run folder's validation/ and shown on the node while it trains.

tmd_core samples and writes the latents (`PreviewPrompts`, the loop's `on_preview` hook); this module decodes
them (the connected VAE for a Wan teacher, the shipped toy VAE for a toy one), writes per validation step a
PNG sheet (a row of frames per prompt) and an animated WEBP per prompt, sends the sheet to the node through
ComfyUI's progress-bar preview, and lists the last step's WEBPs for the node's `ui` output ("images").
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from ..tmd_core.errors import InputError
from ..tmd_core.toy.demo import check_toy_prompts
from ..tmd_core.toy.text import ToyTextEncoder
from ..tmd_core.training.distill import prompt_lines
from ..tmd_core.training.previews import PreviewPrompts
from ..tmd_core.worlds import is_toy_teacher
from . import host

log = logging.getLogger("tmd")

DEFAULT_EVERY = 250
PREVIEW_SIZE = 512  # longest side of the live preview (ComfyUI's --preview-size default)
SHEET_FRAMES = 8  # frames per row of the PNG sheet (evenly spaced over the clip)
MIN_SIDE = 128  # frames smaller than this (the toy world's 32 px) are upscaled, nearest neighbour
FPS = 16  # Wan2.1's frame rate; the animated previews play at it


def preview_prompts(text: str | None, texts: list[str], contexts, clip, teacher, count: int) -> PreviewPrompts | None:
    """The prompts to preview: `text`'s lines (encoded with the CLIP, or the toy encoder for a toy teacher),
    else the first `count` training prompts (already encoded), else None (the data folder's first samples)."""
    lines = prompt_lines(text or "")
    if lines:
        if is_toy_teacher(teacher):
            return PreviewPrompts(lines, list(ToyTextEncoder().encode(check_toy_prompts("validation_prompts", lines))))
        if clip is None:
            raise InputError("validation_prompts need the teacher's text encoder: connect a CLIP (CLIPLoader, type "
                             "wan), or leave validation_prompts empty to preview the first training prompts")
        return PreviewPrompts(lines, host.encode_texts(clip, lines))
    if texts and contexts:
        return PreviewPrompts(list(texts[:count]), list(contexts[:count]))
    return None


class PreviewWriter:
    """The loop's `on_preview`: latents -> frames -> files in the run's validation/, the live preview, `images`.

    Args:
        run: the run folder (validation/ is inside it, under ComfyUI's output folder so /view serves it).
        teacher: the teacher (a toy teacher decodes with the shipped toy VAE).
        vae: a ComfyUI VAE for Wan latents, or None (then only latents are written, and the node says so).
        progress: the node's host.TrainingProgress (its bar carries the live preview).
    """

    def __init__(self, run: str, teacher, vae, progress):
        self.folder = os.path.join(run, "validation")
        self.toy = is_toy_teacher(teacher)
        self.vae, self.progress = (None if self.toy else vae), progress
        channels = getattr(self.vae, "latent_channels", teacher.config.in_channels)
        if self.vae is not None and channels != teacher.config.in_channels:  # refused before training starts
            raise InputError(f"vae decodes {channels}-channel latents, the teacher makes {teacher.config.in_channels}: "
                             "connect the Wan2.1 VAE (VAELoader, wan_2.1_vae.safetensors) or none")
        self.toy_vae = _toy_vae() if self.toy else None
        self.images: list[dict] = []  # the last step's previews, as ComfyUI's ui "images" entries
        self.noted = False

    def decode(self, latents: torch.Tensor) -> torch.Tensor | None:
        """Latents Tensor[K, C, F, H, W] (normalised) -> frames Tensor[K, F', H', W', 3] in [0, 1], or None."""
        if self.toy_vae is not None:
            from ..tmd_core.toy.codec import decode_latents

            clips = decode_latents(latents, self.toy_vae)  # Tensor[K, 3, F', H', W'] in [-1, 1]
            return ((clips.permute(0, 2, 3, 4, 1) + 1) / 2).clamp(0, 1)
        if self.vae is None:
            return None
        frames = self.vae.decode(host.wan21_raw(latents))  # ComfyUI's VAE: Tensor[K, F', H', W', 3] for video
        if frames.ndim == 4:  # an image VAE: one frame per latent
            frames = frames[:, None]
        return frames.float().cpu().clamp(0, 1)

    def __call__(self, stage: str, step: int, latents: torch.Tensor, prompts: list[str]) -> None:
        try:
            with torch.no_grad():
                frames = self.decode(latents)
        except (RuntimeError, ValueError, TypeError) as e:  # a failed preview must not end a run of hours
            log.exception("TMD: decoding the validation previews failed")
            self._note(f"validation previews: decoding failed ({type(e).__name__}: {e}); latents saved in "
                       "validation/, training goes on")
            return
        if frames is None:
            self._note("validation previews: latents saved in validation/; connect the Wan VAE (VAELoader) to "
                       "TMDDistill's vae to see them" if not self.toy else
                       "validation previews: latents saved in validation/ (the toy VAE is not installed)")
            return
        name = f"{stage}-{step:06d}"
        os.makedirs(self.folder, exist_ok=True)
        sheet = sheet_image(frames)
        sheet.save(os.path.join(self.folder, f"{name}.png"))
        self.images = [self._entry(write_animation(os.path.join(self.folder, f"{name}-{k}.webp"), clip))
                       for k, clip in enumerate(frames)]
        self.progress.show_image(sheet, PREVIEW_SIZE)
        log.info("TMD: validation previews %s step %d: %s", stage, step, "; ".join(prompts))

    def _note(self, text: str) -> None:
        """`text` on the node, once per run (the loss lines follow it)."""
        if not self.noted:
            self.noted = True
            host.show_text(self.progress.node_id, text)

    def _entry(self, path: str) -> dict:
        """A ui "images" entry ComfyUI's /view serves: file name, folder relative to the output folder, "output"."""
        rel = os.path.relpath(os.path.dirname(path), host.output_directory())
        return {"filename": os.path.basename(path), "subfolder": rel.replace(os.sep, "/"), "type": "output"}

    def ui(self) -> dict:
        """The node's extra ui output: the last previews (animated WEBPs), when there are any."""
        return {"images": self.images, "animated": (True,)} if self.images else {}


def _toy_vae() -> str | None:
    """The shipped toy VAE, or None (previews stay latents) when it is not installed."""
    try:
        return host.toy_vae()
    except InputError:
        return None


def _pixels(frames: torch.Tensor) -> np.ndarray:
    """Tensor[..., H, W, 3] in [0, 1] -> uint8, nearest-upscaled so the shorter side is at least MIN_SIDE."""
    scale = max(1, -(-MIN_SIDE // min(frames.shape[-3], frames.shape[-2])))
    x = (frames * 255).round().to(torch.uint8).numpy()
    return x.repeat(scale, axis=-3).repeat(scale, axis=-2) if scale > 1 else x


def sheet_image(frames: torch.Tensor):
    """A PIL image: one row per sample, up to SHEET_FRAMES evenly spaced frames per row."""
    from PIL import Image

    k, f = frames.shape[:2]
    keep = sorted({round(i * (f - 1) / max(1, SHEET_FRAMES - 1)) for i in range(min(f, SHEET_FRAMES))})
    x = _pixels(frames[:, keep])  # (K, F'', H, W, 3)
    rows = [np.concatenate(list(row), axis=1) for row in x]
    return Image.fromarray(np.ascontiguousarray(np.concatenate(rows, axis=0)))


def write_animation(path: str, clip: torch.Tensor) -> str:
    """An animated, looping WEBP of Tensor[F, H, W, 3] (Pillow, as ComfyUI's SaveAnimatedWEBP)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in _pixels(clip)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / FPS), loop=0, quality=90)
    return path
