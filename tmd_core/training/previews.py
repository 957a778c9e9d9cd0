"""Preview samples during training: the student on fixed prompts and seeds (docs/design.md §7).

The config calls them validation samples (`validate_every`, `validation_seeds`, the run's `validation/` folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoint import atomic_save_safetensors
from ..noise import make_noise


@torch.no_grad()
def preview_samples(cfg, student, dataset, folder: Path, stage: str, step: int) -> dict:
    """Sample the student for every seed in `cfg.validation_seeds`, seed k paired with data sample k's prompt.

    The latents (normalised space) are written to `folder/<stage>-<step>.safetensors` with the
    prompts and seeds in the metadata, so a host can decode them as previews.
    Returns the log record (path, per-sample mean/std).
    """
    from ..model import TMDModel
    from ..sampler import sample_dmd, sample_tmd

    schedule = cfg.schedule
    device = next(student.parameters()).device
    was_training = student.training
    student.eval()
    latents, prompts = [], []
    for k, seed in enumerate(cfg.validation_seeds):
        _, context, prompt = dataset.sample(k % len(dataset))
        noise = make_noise((1, *dataset.latent_shape), int(seed), device=device)
        context = context[None].to(device)
        if isinstance(student, TMDModel):
            x0 = sample_tmd(student, noise, context, schedule)  # y1 from the noise: as TMDSampler for this seed
        else:
            x0 = sample_dmd(student, noise, context, schedule)
        latents.append(x0.cpu())
        prompts.append(prompt)
    student.train(was_training)
    x = torch.cat(latents)
    path = Path(folder) / f"{stage}-{step:06d}.safetensors"
    meta = {"prompts": json.dumps(prompts, ensure_ascii=False), "seeds": json.dumps(list(cfg.validation_seeds)),
            "stage": stage, "step": str(step)}
    atomic_save_safetensors({"latents": x.contiguous()}, path, meta)
    return {"event": "validation", "stage": stage, "step": step, "path": str(path),
            "mean": x.flatten(1).mean(1).tolist(), "std": x.flatten(1).std(1).tolist()}
