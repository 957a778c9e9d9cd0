"""`tmd toy train`: the whole toy world from scratch — teacher, data, TMD student, DMD2-v baseline, bench.

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
from .evaluate import LATENT_SHAPE, TEACHER_CFG, TEACHER_SHIFT
from .text import ToyTextEncoder
from .world import prompt_split

log = logging.getLogger(__name__)
ASSETS = Path(__file__).with_name("assets")


@dataclasses.dataclass
class ToyPlan:
    """Sizes of one from-scratch run (the shipped files; times in README "Toy world")."""

    teacher_iterations: int = 10000
    data_seeds_per_prompt: int = 8  # 192 training prompts x 8 = 1536 teacher samples
    data_steps: int = 25  # teacher Euler steps with CFG for the training set (50 NFE per sample)
    stage1_iterations: int = 1500
    stage2_iterations: int = 2000  # student every 5th: 400 generator updates
    dmd_iterations: int = 2000  # the DMD2-v baseline: as many stage-2 iterations as TMD


def _teacher(run: Path, plan: ToyPlan) -> Path:
    from .teacher import TeacherTrainConfig, train_teacher

    out = run / "teacher.safetensors"
    state = run / "teacher.trainstate.safetensors"
    if out.exists() and not state.exists():
        return out
    train_teacher(out, TeacherTrainConfig(iterations=plan.teacher_iterations))
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
    teacher = _teacher(run, plan)
    times["teacher"] = time.time() - t0
    data = _data(run, teacher, plan)
    times["data"] = time.time() - t0 - sum(times.values())
    tmd = _distill(run, teacher, data, plan, "tmd")
    times["tmd"] = time.time() - t0 - sum(times.values())
    dmd = _distill(run, teacher, data, plan, "dmd")
    times["dmd2v"] = time.time() - t0 - sum(times.values())
    result = {"teacher": str(teacher), "data": str(data), "tmd": str(tmd), "dmd2v": str(dmd),
              "seconds": {k: round(v, 1) for k, v in times.items()}, "plan": dataclasses.asdict(plan)}
    (run / "train_all.json").write_text(json.dumps(result, indent=1))
    if install:
        install_assets(teacher, tmd, dmd)
    return result


def install_assets(teacher: Path, tmd: Path, dmd: Path) -> None:
    """Copy the three checkpoints into tmd_core/toy/assets as bf16 (the shipped toy world, <= 20 MB)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..checkpoint import atomic_save_safetensors

    ASSETS.mkdir(exist_ok=True)
    for src, name in ((teacher, "toy_teacher"), (tmd, "toy_tmd"), (dmd, "toy_dmd2v")):
        with safe_open(str(src), "pt") as f:
            meta = f.metadata() or {}
        sd = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
        atomic_save_safetensors(sd, ASSETS / f"{name}.safetensors", meta)
        side = src.with_name(src.name.removesuffix(".safetensors") + ".config.json")
        if side.exists():
            shutil.copy(side, ASSETS / f"{name}.config.json")


def run_outputs(run_dir) -> dict[str, Path]:
    """The three checkpoints of a `train_all` run folder, by asset name; raises if one is missing."""
    run = Path(run_dir)
    paths = {"toy_teacher": run / "teacher.safetensors", "toy_tmd": run / "tmd" / "toy_tmd.safetensors",
             "toy_dmd2v": run / "dmd2v" / "toy_dmd2v.safetensors"}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise InputError(f"the run folder {run} is incomplete, missing: {', '.join(missing)}; run `tmd toy train --run-dir {run}`")
    return paths


def asset(name: str) -> Path:
    """Path of a shipped toy checkpoint: "toy_teacher", "toy_tmd" or "toy_dmd2v"."""
    path = ASSETS / f"{name}.safetensors"
    if not path.exists():
        raise InputError(f"the toy checkpoint {name} is not installed ({path}): run `tmd toy train --install`")
    return path
