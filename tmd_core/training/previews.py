"""Preview samples during training: the student on fixed prompts and seeds (docs/design.md §7).

The config calls them validation samples (`validate_every`, `validation_seeds`, the run's `validation/` folder).
The prompts are the host's (`PreviewPrompts`, e.g. TMDDistill's `validation_prompts`), else the data's first
samples. The latents are written here; turning them into pictures is the host's (`OnPreview`), which keeps
this library free of any VAE or image format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import atomic_save_safetensors
from ..errors import InputError
from ..noise import make_noise

# on_preview(stage, step, latents Tensor[K, C, F, H, W] (normalised space, CPU), prompts): on the main process,
# after the latents are written to validation/<stage>-<step>.safetensors.
OnPreview = Callable[[str, int, torch.Tensor, list], None]


@dataclass
class PreviewPrompts:
    """Fixed preview prompts and their text embeddings (the teacher's text encoder): prompt i is sampled with
    seed `validation_seeds[i % len(validation_seeds)]`."""

    prompts: list[str]
    contexts: list[torch.Tensor]  # per prompt Tensor[L, D]

    def __post_init__(self):
        if not self.prompts or len(self.prompts) != len(self.contexts):
            raise InputError(f"preview prompts: {len(self.prompts)} prompts and {len(self.contexts)} embeddings; "
                             "give at least one prompt and one embedding per prompt")

    def check_width(self, text_dim: int) -> None:
        widths = {int(c.shape[-1]) for c in self.contexts}
        if widths != {text_dim}:
            raise InputError(f"the preview prompts were encoded {sorted(widths)} wide, the teacher reads "
                             f"{text_dim}-wide text: encode them with the teacher's own text encoder")


def _requests(cfg, dataset, prompts: PreviewPrompts | None) -> list[tuple[str, torch.Tensor, int]]:
    """(prompt, context Tensor[L, D], seed) per preview sample."""
    seeds = [int(s) for s in cfg.validation_seeds]
    if prompts is None:  # seed k with data sample k's prompt
        return [(p, c, seed) for k, seed in enumerate(seeds) for _, c, p in [dataset.sample(k % len(dataset))]]
    return [(p, c, seeds[i % len(seeds)]) for i, (p, c) in enumerate(zip(prompts.prompts, prompts.contexts))]


@torch.no_grad()
def preview_samples(cfg, student, dataset, folder: Path, stage: str, step: int,
                    prompts: PreviewPrompts | None = None) -> tuple[dict, torch.Tensor, Sequence[str]]:
    """Sample the student on the preview prompts (or, without them, seed k on data sample k's prompt).

    The latents (normalised space) are written to `folder/<stage>-<step>.safetensors` with the
    prompts and seeds in the metadata, so a host can decode them as previews.
    Returns (log record: path, per-sample mean/std; latents Tensor[K, C, F, H, W] on the CPU; prompts).
    """
    from ..model import TMDModel
    from ..sampler import sample_dmd, sample_tmd

    schedule = cfg.schedule
    device = next(student.parameters()).device
    was_training = student.training
    student.eval()
    latents, requests = [], _requests(cfg, dataset, prompts)
    for _, context, seed in requests:
        noise = make_noise((1, *dataset.latent_shape), seed, device=device)
        context = context[None].to(device)
        if isinstance(student, TMDModel):
            x0 = sample_tmd(student, noise, context, schedule)  # y1 from the noise: as TMDSampler for this seed
        else:
            x0 = sample_dmd(student, noise, context, schedule)
        latents.append(x0.float().cpu())
    student.train(was_training)
    x = torch.cat(latents)
    texts = [p for p, _, _ in requests]
    path = Path(folder) / f"{stage}-{step:06d}.safetensors"
    meta = {"prompts": json.dumps(texts, ensure_ascii=False), "seeds": json.dumps([s for _, _, s in requests]),
            "stage": stage, "step": str(step)}
    atomic_save_safetensors({"latents": x.contiguous()}, path, meta)
    record = {"event": "validation", "stage": stage, "step": step, "path": str(path),
              "mean": x.flatten(1).mean(1).tolist(), "std": x.flatten(1).std(1).tolist()}
    return record, x, texts
