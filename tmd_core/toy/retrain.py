"""Retraining the toy world from scratch (`tmd toy train`): VAE, teacher, data, TMD student, DMD2-v baseline.

Every step writes its result atomically and is skipped when that result exists, so re-running the
command continues where an interrupted run stopped (each training step also resumes mid-way).
"""

from __future__ import annotations

import dataclasses
import json
import logging
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
        cfg.stage2.tmmf_weight = 0.0  # the preset's TM-MF term needs a flow head, which the baseline has not
    final = Path(cfg.output_dir) / f"{cfg.name}.safetensors"
    if final.exists():
        return final
    return run_distill(cfg, resume=(Path(cfg.output_dir) / "config.yaml").exists())


def train_all(run_dir="runs/toy", plan: ToyPlan | None = None, install: bool = False) -> dict:
    """Run (or continue) every step; with `install`, copy the results into the package's assets (bf16)."""
    plan = plan or ToyPlan()
    from ..checkpoint import remove_stale_temporaries

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    for folder in (run, run / "data", run / "tmd", run / "dmd2v"):  # left by a process killed during a write
        remove_stale_temporaries(folder)
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


@dataclasses.dataclass
class QuickPlan:
    """A short toy distillation (`tmd toy distill`): minutes on a CPU, to try the whole method end to end.

    Far from the shipped student's budget (ToyPlan), so expect a weaker student; the point is the path."""

    prompts: int = 24  # training prompts, spread over the training split
    samples_per_prompt: int = 2  # teacher samples per prompt (seeds seed, seed + 1, ...)
    teacher_steps: int = 25  # Euler steps with CFG when the teacher makes the data
    stage1_iterations: int = 200
    stage2_iterations: int = 200  # student every 5th: 40 generator updates
    batch_size: int = 8
    head_blocks: int = 2  # H of the toy preset (of the toy teacher's 12 blocks)


QUICK_NAME = "toy_quick"


def check_quick(run_dir, teacher_path, plan: QuickPlan, seed: int, resume: bool, names: dict | None = None) -> Path:
    """`quick_distill`'s inputs, from the teacher's header only. Returns the teacher path."""
    from ..errors import CheckpointError
    from ..loading import describe_checkpoint
    from ..validation import MAX_STEPS, check_int, check_output_folder, check_seed
    from ..worlds import is_toy_config

    n = {"run_dir": "run_dir", "teacher": "teacher", "seed": "seed", **(names or {})}
    train = len(prompt_split("train"))
    for field, hi in (("prompts", train), ("samples_per_prompt", 64), ("teacher_steps", MAX_STEPS),
                      ("stage1_iterations", 10**6), ("stage2_iterations", 10**6), ("batch_size", 1024)):
        check_int(n.get(field, field), getattr(plan, field), 1, hi)
    check_seed(n["seed"], seed, count=plan.prompts * plan.samples_per_prompt)
    run = check_output_folder(n["run_dir"], run_dir)
    started = run.is_dir() and any(run.iterdir())
    if started and not resume:
        raise InputError(f"{n['run_dir']}: {run} already holds a run: pass --resume to continue it, or choose "
                         "another folder")
    if resume and not started:
        raise InputError(f"--resume: there is no run to resume in {run}: leave --resume out to start it")
    path = Path(teacher_path) if teacher_path else ASSETS / "toy_teacher.safetensors"
    if not path.exists():
        raise InputError(f"{n['teacher']}: no toy teacher at {path}: run `tmd toy train --install`, or pass --teacher")
    try:
        info = describe_checkpoint(path)
    except CheckpointError as e:
        raise InputError(f"{n['teacher']}: {e}") from e
    cfg = info["transformer_config"]
    if info["kind"] == "tmd" or not is_toy_config(cfg):
        raise InputError(f"{n['teacher']}: {path.name} is not a teacher of this toy world ({info['format']}, "
                         f"{cfg.get('in_channels')} latent channels, {cfg.get('text_dim')}-wide text; the toy world "
                         f"has {LATENT_SHAPE[0]} and 32): retrain it with `tmd toy train --install`, or pass --teacher")
    layers = info["num_layers"]
    check_int(n.get("head_blocks", "head_blocks"), plan.head_blocks, 1, layers - 1,
              hint=f"the teacher has {layers} blocks and the backbone needs at least one")
    return path


def quick_distill(run_dir="runs/toy_quick", teacher_path=None, plan: QuickPlan | None = None, seed: int = 0,
                  resume: bool = False, progress=None, should_stop=None, names: dict | None = None):
    """Make a small data set with the toy teacher and distill a TMD student from it, in one call (the same
    one-call path as the TMDDistill node: training.distill.distill_in_process).

    Args:
        teacher_path: a toy-world teacher (default: the shipped one).
        progress: callback(phase, done, total, logs).
        should_stop: polled after every step; True stops with a resumable state (continue with `resume`).
    Returns:
        DistillResult; the student is `<run_dir>/toy_quick.safetensors`.
    """
    from ..loading import load_teacher
    from ..training.distill import data_request, distill_in_process, make_config

    plan = plan or QuickPlan()
    path = check_quick(run_dir, teacher_path, plan, seed, resume, names)
    train = prompt_split("train")
    step = len(train) / plan.prompts  # spread over colours, shapes and motions
    prompts = [train[int(i * step)].text for i in range(plan.prompts)]
    enc = ToyTextEncoder()
    teacher = load_teacher(path, dtype=torch.float32)
    run = Path(run_dir)
    overrides = {"batch_size": plan.batch_size, "seed": seed, "checkpoint_every": 50,
                 "model": {"head_blocks": plan.head_blocks},
                 "stage1": {"iterations": plan.stage1_iterations},
                 "stage2": {"iterations": plan.stage2_iterations}}
    cfg = make_config(teacher, run, run / "data", name=QUICK_NAME, stages=("stage1", "stage2"), overrides=overrides,
                      device="cpu", teacher_path=str(path))
    request = data_request(teacher, prompts, list(enc.encode(prompts)), enc.null_context(1)[0], frames=8, height=32,
                           width=32, samples_per_prompt=plan.samples_per_prompt, steps=plan.teacher_steps,
                           shift=TEACHER_SHIFT, guidance_scale=TEACHER_CFG, seed=seed, batch_size=16)
    return distill_in_process(teacher, cfg, data_request=request, resume=resume, progress=progress,
                              should_stop=should_stop)


def install_assets(paths: dict[str, Path], assets: Path | None = None) -> dict[str, Path]:
    """Copy a run's files into tmd_core/toy/assets (or `assets`), the models as bf16 (the shipped toy world, <= 20 MB).

    Provenance names installed files, never paths of the machine that trained them: the teacher's `vae` is the
    installed VAE's file name, and the students' provenance names the installed teacher: `teacher_sha256` is the sha256 of the installed
    (bf16) teacher file, `teacher_sha256_of` says so, and `training_teacher_sha256` keeps the digest of the fp32
    teacher file the run trained with. Returns {name: installed path}.
    """
    from safetensors.torch import load_file

    from ..checkpoint import atomic_save_safetensors, install_checkpoint
    from ..loading import read_safetensors_header, teacher_sha256

    assets = Path(assets) if assets is not None else ASSETS
    assets.mkdir(parents=True, exist_ok=True)
    installed: dict[str, Path] = {}
    for name in sorted(paths, key=NAMES.index):  # the teacher before the students that name it
        src = paths[name]
        meta = dict(read_safetensors_header(src)[1])
        if name == "toy_teacher" and "toy_vae" in installed and "provenance" in meta:
            prov = json.loads(meta["provenance"])
            prov["vae"] = installed["toy_vae"].name
            meta["provenance"] = json.dumps(prov)
        # a student installed alone names the teacher already installed (a run trained with a copy of it)
        teacher = installed.get("toy_teacher") or (assets / "toy_teacher.safetensors")
        if name in ("toy_tmd", "toy_dmd2v") and teacher.exists() and "provenance" in meta:
            prov = json.loads(meta["provenance"])
            prov["training_teacher_sha256"] = prov.get("teacher_sha256")
            prov["teacher"] = teacher.name
            prov["teacher_sha256"] = teacher_sha256(teacher)
            prov["teacher_sha256_of"] = (f"the installed bf16 {teacher.name}; training_teacher_sha256 "
                                         "is the fp32 teacher file the run trained with")
            if prov.get("student_init"):  # a path of the training machine: keep its file name only
                prov["student_init"] = Path(prov["student_init"]).name
            meta["provenance"] = json.dumps(prov)
        # the VAE stays fp32 (1.3 MB): its decoder draws every pixel the benchmark reads
        cast = name != "toy_vae"
        sd = {k: v.to(torch.bfloat16) if cast and v.is_floating_point() else v for k, v in load_file(str(src)).items()}
        installed[name] = assets / f"{name}.safetensors"
        atomic_save_safetensors(sd, installed[name], meta)
        side = src.with_name(src.name.removesuffix(".safetensors") + ".config.json")
        if side.exists():
            install_checkpoint(side, assets / f"{name}.config.json")
    return installed


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
