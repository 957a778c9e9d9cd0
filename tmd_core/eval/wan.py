"""Wan2.1 videos for `tmd eval`: the rows' samplers, resumable generation, and decoding with the Wan VAE.

Every (row, prompt, seed) is one MP4 at `<out>/videos/<row>/<prompt>-<seed>.mp4`, written atomically
(tmd_core/toy/video_io.write_video), so an interrupted run loses at most the video in progress and a re-run
generates only what is missing. The noise of (prompt, seed) is the same for every row (as ToyBench's
`pair_seed`). Latents are de-normalised with the VAE's own latents_mean / latents_std (Wan2.1's 16 values:
tmd_core/worlds.py) and decoded by diffusers' AutoencoderKLWan from local weights; nothing is downloaded.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from .settings import TeacherSetting, slug

WAN_FPS = 16  # Wan2.1's frame rate


@dataclass
class Row:
    """One row of the report: a sampler setting of one model. `run(noise, ctx, neg) -> latents` (normalised)."""

    name: str
    family: str
    nfe: float
    model: str  # "teacher" or the student's label
    run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

    @property
    def folder(self) -> str:
        return slug(self.name)


def noise_seed(prompt: str, seed: int) -> int:
    """Noise seed of one (prompt, seed) pair, stable across processes and the same for every row."""
    return zlib.crc32(prompt.encode()) * 1000 + int(seed)


def video_name(prompt: str, seed: int) -> str:
    """`<prompt>-<seed>.mp4` as VBench's standard mode names videos; long or unsafe prompts get a short safe form."""
    safe = prompt if len(prompt) <= 180 and "/" not in prompt and "\0" not in prompt else \
        f"{slug(prompt)[:120]}_{zlib.crc32(prompt.encode()):08x}"
    return f"{safe}-{seed}.mp4"


def teacher_rows(teacher, settings: list[TeacherSetting], shift: float) -> list[Row]:
    from ..sampler import sample_teacher

    return [Row(s.name, s.family, s.nfe, "teacher",
                lambda n, c, neg, s=s: sample_teacher(teacher, n, c, steps=s.steps, shift=shift, guidance_scale=s.cfg,
                                                      negative_context=neg if s.cfg != 1.0 else None))
            for s in settings]


def tmd_rows(model, grid, label: str | None = None) -> list[Row]:
    import dataclasses

    from ..sampler import sample_tmd

    rows = []
    for m, n in grid:
        sched = dataclasses.replace(model.tmd_config.schedule, outer_steps=m, inner_steps=n)
        prefix = f"{label}: " if label else ""
        rows.append(Row(f"{prefix}TMD outer {m} x inner {n}", f"{prefix}TMD outer {m}", model.effective_nfe(m, n),
                        label or "student", lambda noise, ctx, neg, s=sched: sample_tmd(model, noise, ctx, s)))
    return rows


def dmd_rows(student, steps, shift: float, label: str | None = None) -> list[Row]:
    from ..sampler import sample_dmd
    from ..schedule import TMDSchedule

    prefix = f"{label}: " if label else ""
    return [Row(f"{prefix}DMD2-v {k}-step", f"{prefix}DMD2-v", k, label or "student",
                lambda n, c, neg, k=k: sample_dmd(student, n, c, TMDSchedule(outer_steps=k, inner_steps=1,
                                                                             outer_shift=shift)))
            for k in steps]


# ---- the Wan VAE -----------------------------------------------------------------------------------------

def vae_folder(path) -> Path:
    """The folder of an AutoencoderKLWan (config.json + weights), or a pipeline folder's `vae/`; InputError if none."""
    p = Path(path).expanduser()
    for folder in (p, p / "vae"):
        cfg = folder / "config.json"
        if cfg.is_file():
            try:
                kind = json.loads(cfg.read_text()).get("_class_name")
            except ValueError as e:
                raise InputError(f"--vae: {cfg} is not valid JSON ({e})") from e
            if kind not in (None, "AutoencoderKLWan"):
                raise InputError(f"--vae: {folder} holds a {kind}, not the Wan VAE (AutoencoderKLWan)")
            if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
                raise InputError(f"--vae: {folder} has a config.json but no weight file (.safetensors): copy the "
                                 "Wan2.1 VAE's weights there (diffusers layout, e.g. Wan2.1-T2V-1.3B-Diffusers/vae)")
            return folder
    raise InputError(f"--vae: no AutoencoderKLWan at {p} (expected config.json and diffusion_pytorch_model.safetensors, "
                     "or a pipeline folder with vae/): give the local Wan2.1 VAE folder in diffusers layout")


def load_vae(path, device="cpu"):
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan.from_pretrained(str(vae_folder(path)), local_files_only=True).to(device).eval()


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents Tensor[B, C, F, H, W] -> clips Tensor[B, 3, 1 + 4 (F - 1), 8 H, 8 W] in [-1, 1]."""
    from ..worlds import WAN21_LATENT_MEAN, WAN21_LATENT_STD

    c = latents.shape[1]
    mean = vae.config.get("latents_mean") or WAN21_LATENT_MEAN
    std = vae.config.get("latents_std") or WAN21_LATENT_STD
    if len(mean) != c or len(std) != c:
        raise InputError(f"the VAE's latents_mean/latents_std have {len(mean)} channels, the latents {c}: use the VAE "
                         "the teacher was trained with")
    dtype = next(vae.parameters()).dtype
    z = latents.float() * torch.tensor(std).view(1, c, 1, 1, 1) + torch.tensor(mean).view(1, c, 1, 1, 1)
    return vae.decode(z.to(dtype), return_dict=False)[0].float().clamp(-1, 1)


def generate_videos(rows: list[Row], prompts: list[str], contexts: list[torch.Tensor],
                    negative: torch.Tensor | None, seeds: list[int], shape, vae, out_dir,
                    progress: bool = True) -> dict:
    """Write every missing video of rows x prompts x seeds; existing files are kept (resumable).

    Returns {"generated": n, "skipped": n, "seconds": {row name: mean seconds per video}, "files":
    {row folder: {file name: prompt}}}. The seconds each video took are kept in `<row folder>/seconds.json`.
    """
    import time

    from tqdm.auto import tqdm

    from ..checkpoint import atomic_write_text, remove_stale_temporaries
    from ..noise import make_noise
    from ..toy.video_io import write_video

    out = Path(out_dir)
    device = next(vae.parameters()).device  # the models' device (tmd eval --device)
    todo, files = [], {}
    for row in rows:
        folder = out / row.folder
        if folder.is_dir():
            remove_stale_temporaries(folder)
        files[row.folder] = {}
        for p, ctx in zip(prompts, contexts):
            for s in seeds:
                name = video_name(p, s)
                files[row.folder][name] = p
                if not (folder / name).is_file():
                    todo.append((row, p, ctx, s, folder / name))
    bar = tqdm(total=len(todo), desc="videos", unit="video", disable=not progress or not todo)
    def timings(folder: Path) -> dict:
        f = folder / "seconds.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    for row, p, ctx, s, path in todo:
        t0 = time.perf_counter()
        noise = make_noise((1, *shape), seed=noise_seed(p, s), device=device)  # drawn on the CPU: same on any device
        neg = negative[None] if negative is not None and negative.ndim == 2 else negative
        x = row.run(noise, (ctx[None] if ctx.ndim == 2 else ctx).to(device), None if neg is None else neg.to(device))
        clip = decode(vae, x)[0]
        write_video(path, clip, fps=WAN_FPS, scale=1)
        atomic_write_text(path.parent / "seconds.json",
                          json.dumps({**timings(path.parent), path.name: round(time.perf_counter() - t0, 4)}, indent=1))
        bar.update(1)
    bar.close()
    seconds = {}
    for row in rows:
        known = [v for k, v in timings(out / row.folder).items() if k in files[row.folder]]
        if known:
            seconds[row.name] = sum(known) / len(known)
    return {"generated": len(todo), "skipped": sum(len(v) for v in files.values()) - len(todo),
            "seconds": seconds, "files": files}
