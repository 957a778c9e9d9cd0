"""Retraining the toy world from scratch (`tmd toy train`): VAE, teacher, data, TMD student, DMD2-v baseline.

Every step writes its result atomically and is skipped when that result exists, so re-running the
command continues where an interrupted run stopped (each training step also resumes mid-way).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import torch

from ..errors import InputError
from .latent import LATENT_SHAPE
from .shipped import ASSETS, NAMES
from .teacher import TEACHER_CFG, TEACHER_SHIFT
from .text import ToyTextEncoder
from .world import prompt_split

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ToyPlan:
    """Sizes of one from-scratch run (the shipped files; times in README "Toy world")."""

    vae_iterations: int = 6000
    teacher_iterations: int = 10000
    data_seeds_per_prompt: int = 8  # 192 training prompts x 8 = 1536 teacher samples
    data_steps: int = 25  # teacher Euler steps with CFG for the training set (50 NFE per sample)
    stage1_iterations: int = 1500
    stage2_iterations: int = 2000  # student every 5th: 400 generator updates
    dmd_iterations: int = 2000  # the DMD2-v baseline: as many stage-2 iterations as TMD


def _vae(run: Path, plan: ToyPlan) -> Path:
    from .autoencoder import VAETrainConfig, train_vae

    out = run / "vae.safetensors"
    if out.exists():  # written once, at the end of training
        return out
    return train_vae(out, VAETrainConfig(iterations=plan.vae_iterations))


def _teacher(run: Path, vae: Path, plan: ToyPlan) -> Path:
    from .teacher import TeacherTrainConfig, train_teacher

    out = run / "teacher.safetensors"
    state = run / "teacher.trainstate.safetensors"
    if out.exists() and not state.exists():
        return out
    train_teacher(out, TeacherTrainConfig(iterations=plan.teacher_iterations), vae=vae)
    state.unlink(missing_ok=True)  # finished: the EMA weights in `out` are the teacher
    return out


def _data(run: Path, teacher_path: Path, plan: ToyPlan) -> Path:
    from ..loading import load_teacher
    from ..training.make_data import make_data

    out = run / "data"
    if (out / "index.json").exists() and json.loads((out / "index.json").read_text()).get("complete"):
        return out
    prompts = [p.text for p in prompt_split("train") for _ in range(plan.data_seeds_per_prompt)]
    enc = ToyTextEncoder()
    contexts = list(enc.encode(prompts))
    teacher = load_teacher(teacher_path, dtype=torch.float32)
    make_data(teacher, out, contexts=contexts, prompts=prompts, negative_context=enc.null_context(1),
              latent_shape=LATENT_SHAPE, steps=plan.data_steps, shift=TEACHER_SHIFT,
              guidance_scale=TEACHER_CFG, seed=0, batch_size=32, shard_size=128, resume=out.exists(),
              source={"what": "toy teacher samples", "teacher": str(teacher_path)})
    return out


def _distill(run: Path, teacher_path: Path, data: Path, plan: ToyPlan, kind: str) -> Path:
    from ..training.config import preset
    from ..training.loop import run_distill

    cfg = preset("toy")
    cfg.model.teacher, cfg.data = str(teacher_path), str(data)
    if kind == "tmd":
        cfg.output_dir = str(run / "tmd")
        cfg.stage1.iterations, cfg.stage2.iterations = plan.stage1_iterations, plan.stage2_iterations
    else:  # the DMD2-v baseline: plain student, Eq. 18, stage 2 only, from the teacher
        cfg.name, cfg.output_dir, cfg.stages = "toy_dmd2v", str(run / "dmd2v"), ("stage2",)
        cfg.stage2.student_kind, cfg.stage2.iterations = "dmd", plan.dmd_iterations
    final = Path(cfg.output_dir) / f"{cfg.name}.safetensors"
    if final.exists():
        return final
    return run_distill(cfg, resume=Path(cfg.output_dir).exists())


def train_all(run_dir="runs/toy", plan: ToyPlan | None = None, install: bool = False) -> dict:
    """Run (or continue) every step; with `install`, copy the results into the package's assets (bf16)."""
    plan = plan or ToyPlan()
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    times = {}
    t0 = time.time()
    vae = _vae(run, plan)
    times["vae"] = time.time() - t0
    teacher = _teacher(run, vae, plan)
    times["teacher"] = time.time() - t0 - sum(times.values())
    data = _data(run, teacher, plan)
    times["data"] = time.time() - t0 - sum(times.values())
    tmd = _distill(run, teacher, data, plan, "tmd")
    times["tmd"] = time.time() - t0 - sum(times.values())
    dmd = _distill(run, teacher, data, plan, "dmd")
    times["dmd2v"] = time.time() - t0 - sum(times.values())
    result = {"vae": str(vae), "teacher": str(teacher), "data": str(data), "tmd": str(tmd), "dmd2v": str(dmd),
              "seconds": {k: round(v, 1) for k, v in times.items()}, "plan": dataclasses.asdict(plan)}
    (run / "train_all.json").write_text(json.dumps(result, indent=1))
    if install:
        install_assets(run_outputs(run))
    return result


def install_assets(paths: dict[str, Path]) -> None:
    """Copy a run's files into tmd_core/toy/assets, the models as bf16 (the shipped toy world, <= 20 MB)."""
    from safetensors.torch import load_file

    from ..checkpoint import atomic_save_safetensors
    from ..loading import read_safetensors_header

    ASSETS.mkdir(exist_ok=True)
    for name, src in paths.items():
        meta = read_safetensors_header(src)[1]
        # the VAE stays fp32 (1.3 MB): its decoder draws every pixel the benchmark reads
        cast = name != "toy_vae"
        sd = {k: v.to(torch.bfloat16) if cast and v.is_floating_point() else v for k, v in load_file(str(src)).items()}
        atomic_save_safetensors(sd, ASSETS / f"{name}.safetensors", meta)
        side = src.with_name(src.name.removesuffix(".safetensors") + ".config.json")
        if side.exists():
            shutil.copy(side, ASSETS / f"{name}.config.json")


def run_outputs(run_dir) -> dict[str, Path]:
    """The files of a `train_all` run folder, by asset name (shipped.NAMES); raises if one is missing."""
    run = Path(run_dir)
    paths = {"toy_vae": run / "vae.safetensors", "toy_teacher": run / "teacher.safetensors",
             "toy_tmd": run / "tmd" / "toy_tmd.safetensors", "toy_dmd2v": run / "dmd2v" / "toy_dmd2v.safetensors"}
    assert tuple(paths) == NAMES
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise InputError(f"the run folder {run} is incomplete, missing: {', '.join(missing)}; run `tmd toy train --run-dir {run}`")
    return paths
