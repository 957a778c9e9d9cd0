"""Checkpoints for `tmd eval` tests: a tiny Wan2.1-like teacher (16 latent channels), a TMD and a DMD2-v student
that record the teacher's sha256 as training does, a random-weight AutoencoderKLWan folder, text embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers_wan import make_tiny_teacher, save_diffusers_single
from safetensors.torch import save_file

from tmd_core import TMDModel, save_tmd, teacher_sha256

PROMPTS = ["a cat walking on grass", "a red car driving at night"]


def wan_world(folder: Path, seed: int = 0, text_dim: int = 24) -> dict:
    """{teacher, tmd, dmd, vae, embeddings}: paths of tiny real-architecture files in real layouts."""
    folder = Path(folder)
    teacher = make_tiny_teacher(seed=seed, in_channels=16, out_channels=16, text_dim=text_dim)
    t_path = save_diffusers_single(teacher, folder / "teacher.safetensors", sidecar=True)
    digest = teacher_sha256(t_path)
    student = TMDModel.from_teacher(teacher, head_blocks=2)
    with torch.no_grad():
        for p in student.fusion.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    tmd = save_tmd(student, folder / "tmd.safetensors", provenance={"teacher": t_path.name, "teacher_sha256": digest})
    dmd_model = make_tiny_teacher(seed=seed + 7, in_channels=16, out_channels=16, text_dim=text_dim)
    prov = json.dumps({"teacher": t_path.name, "teacher_sha256": digest})
    dmd = save_diffusers_single(dmd_model, folder / "dmd.safetensors", sidecar=True,
                                metadata={"format": "wan-dmd", "provenance": prov})
    g = torch.Generator().manual_seed(5)
    emb = folder / "prompts.safetensors"
    save_file({"context": torch.randn(len(PROMPTS), 7, text_dim, generator=g),
               "negative_context": torch.randn(1, 5, text_dim, generator=g)}, str(emb),
              metadata={"prompts": json.dumps(PROMPTS)})
    return {"teacher": t_path, "tmd": tmd, "dmd": dmd, "vae": tiny_wan_vae(folder / "vae"), "embeddings": emb}


def tiny_wan_vae(folder: Path) -> Path:
    """diffusers' AutoencoderKLWan (Wan2.1's architecture, 16 latent channels) with small widths, random weights."""
    from diffusers import AutoencoderKLWan

    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
                               temperal_downsample=[False, True, True])
    vae.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)
