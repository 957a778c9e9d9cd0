"""One training loop for both stages of TMD (docs/method.md §4–5) on Hugging Face Accelerate.

One process on CPU or GPU, or many through `accelerate launch` (or `torchrun`): DDP (`--multi_gpu`,
Accelerate wraps each stage's losses, loss_modules.py) or FSDP2 (`--config_file configs/accelerate_fsdp2.yaml`,
`fully_shard` units per network, sharding.py); on a machine without GPUs the processes form a gloo group.
Every random draw comes from a CPU generator, the same on every process (each keeps its rows of the global
batch's draws, draws.py, so N processes reproduce one process with the same global batch), whose state is
checkpointed with the models, optimisers, EMA and the data position, so `resume=True` continues a killed
run exactly: the resumed losses equal those of an uninterrupted run.

Run folder (`output_dir`): config.yaml, log.jsonl, state-stage{1,2}.safetensors (training state; under
FSDP2 plus one state-<stage>.rank<r>.step<s>.safetensors of shards per other process), stage1.safetensors
(the stage-1 student, when stage 2 follows), validation/, and the result `<name>.safetensors` (tmd/1, written
by rank 0; a `dmd` baseline student is a plain Wan file).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text, remove_stale_temporaries
from ..errors import ConfigError
from . import steps
from .builders import (
    build_fake_score,
    build_stage1_student,
    build_stage2_student,
    check_data_fits,
    load_frozen_teacher,
    teacher_identity,
)
from .config import RESUMABLE_CHANGES, RUN_FILES, TrainConfig, check_run, to_dict, to_yaml
from .data import ShardDataset, ShardReader
from .draws import batch_split, same_calls
from .previews import OnPreview, PreviewPrompts, preview_samples
from .runlog import JsonlLog, derive_seed, memory_mb, reduce_logs, summary_line
from .sharding import (
    check_launch_request,
    check_placement,
    full_tensors,
    meta_template,
    parallel_mode,
    rebuild_full,
    shard_frozen,
)
from .state import EMA, load_state, remove_old_shards, rng_snapshot, save_state, shard_path

# progress(stage, step, total, logs): called on the main process after every step.
Progress = Callable[[str, int, int, dict], None]
# What a start writes before its first saved state; a start that fails removes the ones it created.
START_FILES = ("config.yaml", "log.jsonl", "teacher.json")
__all__ = ["Progress", "RESUMABLE_CHANGES", "make_accelerator", "run_distill"]
log = logging.getLogger(__name__)


@dataclass
class _Run:
    cfg: TrainConfig
    accelerator: object
    out: Path
    teacher: torch.nn.Module
    identity: dict
    dataset: ShardDataset
    log: JsonlLog
    progress: Progress | None
    should_stop: Callable[[], bool] | None
    mode: str = "single"  # "single" | "ddp" | "fsdp2" (sharding.parallel_mode)
    template: torch.nn.Module | None = None  # FSDP2: the student's shape on the meta device, to gather it whole
    teacher_template: torch.nn.Module | None = None  # teacher_placement shard: the teacher's, likewise
    previews: PreviewPrompts | None = None  # the host's preview prompts (else the data's first samples)
    on_preview: OnPreview | None = None  # the host's hook for the preview latents (decode, show, save images)

    @property
    def sharded(self) -> bool:
        return self.mode == "fsdp2"

    @contextlib.contextmanager
    def whole_teacher(self):
        """The teacher whole, to copy into a new network (student, fake score): the teacher itself, or when it
        is sharded a full copy gathered on every process (a collective) and dropped after the block."""
        if self.teacher_template is None:
            yield self.teacher
            return
        state = full_tensors(self.teacher.state_dict(), like=self.teacher_template.state_dict())
        whole = rebuild_full(self.teacher_template, state).to(self.accelerator.device)
        del state
        yield whole

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    has_gpu = torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
    # cpu=True also makes accelerate form a gloo group when several CPU processes are launched
    # a loss module need not reach every parameter of its networks on every step (e.g. no GAN head yet)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # precision is the run config's (steps.autocast); accelerate keeps none of its own, so a host process
    # can run distillations of different precisions one after another without resetting accelerate's state
    cpu = cfg.device == "cpu" or not has_gpu
    check_launch_request(cfg=cfg)  # FSDP1 / DeepSpeed / another precision: refused before accelerate builds anything
    try:
        acc = Accelerator(mixed_precision="no", cpu=cpu, kwargs_handlers=[ddp])
    except ValueError as e:  # accelerate's device is set once per process
        raise ConfigError(f"this process already ran accelerate on another device ({e}); a run with device "
                          f"{cfg.device!r} needs a new process: restart the host, or keep device: auto") from e
    check_launch(acc.num_processes)
    # ConfigError naming the fix for FSDP1, DeepSpeed, FSDP2 without per-block units, a sharded teacher under DDP
    check_placement(cfg, parallel_mode(acc))
    return acc


def check_launch(num_processes: int, env=None) -> None:
    """Refuse a launch that asked for several processes but got one (accelerate's `--cpu` launcher
    starts N processes only through MPI; without it, it silently runs one)."""
    import os

    env = os.environ if env is None else env
    asked_many = "MASTER_ADDR" in env and env.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1")
    if num_processes == 1 and asked_many and "WORLD_SIZE" not in env:
        raise ConfigError(
            "accelerate launch --cpu --num_processes N started one process: accelerate's CPU launcher needs MPI "
            "(--mpirun_hostfile) for N > 1. On a machine without GPUs use `accelerate launch --multi_gpu "
            "--num_processes N -m tmd_core distill ...` (it forms a gloo group on the CPU), or "
            "`torchrun --nproc_per_node N -m tmd_core distill ...`"
        )


def run_distill(cfg: TrainConfig, *, teacher=None, progress: Progress | None = None,
                should_stop: Callable[[], bool] | None = None, resume: bool = False,
                accelerator=None, previews: PreviewPrompts | None = None,
                on_preview: OnPreview | None = None) -> Path:
    """Distill a TMD student: stage 1 (TM-MF), stage 2 (DMD2-v with rollout) or both, as `cfg.stages` says.

    Args:
        cfg: a TrainConfig (preset + overrides).
        teacher: an already-loaded WanTransformer3DModel (e.g. a ComfyUI model); else `cfg.model.teacher`.
        progress: callback(stage, step, total, logs) after every step (main process).
        should_stop: polled after every step; when True a resumable state is saved and the current
            student is written as `<name>.partial.safetensors`, whose path is returned.
        resume: continue the run in `cfg.output_dir` (exactly, from its last saved state).
        previews: fixed prompts of the validation samples (every `cfg.validate_every` steps and after the
            last step of each stage); None samples the data's first prompts.
        on_preview: on_preview(stage, step, latents, prompts) after each validation sample is written.
    Returns:
        Path of the written checkpoint (tmd/1 with provenance: stages, iterations, teacher sha256).
    """
    acc = accelerator or make_accelerator(cfg)
    check_run(cfg, acc.num_processes, teacher=teacher, resume=resume)  # = `tmd distill --dry-run`
    out = Path(cfg.output_dir)
    final = out / f"{cfg.name}.safetensors"
    acc.wait_for_everyone()  # every process has checked the folder before the main one writes to it
    if resume and final.is_file():
        return final  # already complete
    existed = {n: (out / n).exists() for n in (".", *START_FILES)}
    if acc.is_main_process:
        if not resume:  # a log without a training step (check_run allowed it): a start that did not get far
            (out / "log.jsonl").unlink(missing_ok=True)
        removed = remove_stale_temporaries(out)  # left by a process killed during a write
        if removed:
            log.info("removed %d stale temporary file(s) in %s: %s", len(removed), out, [p.name for p in removed])
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):  # the caller's global RNG is left as it was
            return _run_stages(cfg, acc, out, final, teacher, progress, should_stop, previews, on_preview)
    except BaseException:
        if acc.is_main_process:
            _undo_failed_start(out, final, existed)
        raise


def _undo_failed_start(out: Path, final: Path, existed: dict) -> None:
    """After an error or abort before anything resumable was saved, remove what this start created, so the
    same command can simply be run again (a run with saved state is kept for --resume)."""
    partial = final.with_name(final.name.replace(".safetensors", ".partial.safetensors"))
    if any((out / n).exists() for n in RUN_FILES) or final.exists() or partial.exists():
        return
    for name in START_FILES:
        if not existed[name]:
            (out / name).unlink(missing_ok=True)
    remove_stale_temporaries(out)
    if not existed["."] and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _run_stages(cfg, acc, out: Path, final: Path, teacher, progress, should_stop, previews, on_preview) -> Path:
    dataset = ShardDataset(cfg.data)
    teacher = load_frozen_teacher(cfg, teacher, acc.device)
    check_data_fits(teacher, dataset.latent_shape, dataset.text_dim, str(cfg.data))
    if previews is not None:
        previews.check_width(teacher.config.text_dim)
    identity = teacher_identity(cfg, teacher, out) if acc.is_main_process else {}
    identity = _broadcast_object(acc, identity)
    if acc.is_main_process:
        atomic_write_text(out / "config.yaml", to_yaml(cfg))
    mode = parallel_mode(acc)
    check_placement(cfg, mode)
    run = _Run(cfg, acc, out, teacher, identity, dataset, JsonlLog(out / "log.jsonl", acc.is_main_process),
               progress, should_stop, mode=mode, previews=previews, on_preview=on_preview)
    if run.sharded and cfg.teacher_placement == "shard":
        run.teacher_template = meta_template(teacher)
        shard_frozen(teacher)
    if acc.is_main_process:
        log.info("training on %d process(es), %s, device %s, %s master weights, teacher %s (%s)", acc.num_processes,
                 {"single": "one process", "ddp": "DDP (data parallel)", "fsdp2": "FSDP2 (sharded)"}[run.mode],
                 acc.device, cfg.master_dtype, "sharded" if run.teacher_template is not None else "replicated",
                 next(teacher.parameters()).dtype)
    stage1_result = out / "stage1.safetensors"
    done: dict[str, int] = {}
    for stage in cfg.stages:
        last = stage == cfg.stages[-1]
        if stage == "stage1" and not last and stage1_result.is_file():
            done[stage] = cfg.stage1.iterations
            continue
        torch.manual_seed(derive_seed(cfg.seed, stage, "init"))  # new modules (fusion, heads) equal everywhere
        with run.whole_teacher() as whole:
            if stage == "stage1":
                student = build_stage1_student(cfg, whole, acc.device)
            else:
                init = stage1_result if "stage1" in cfg.stages else None
                student = build_stage2_student(cfg, whole, acc.device, init)
        run.template = meta_template(student) if run.sharded else None
        step, stopped, ema = _train_stage(run, stage, student)
        done[stage] = step
        target = out / f"{cfg.name}.partial.safetensors" if stopped else (final if last else stage1_result)
        path = _save_student(run, student, ema, target, done, complete=not stopped and last)
        if stopped:
            return path
        del student
    partial = out / f"{cfg.name}.partial.safetensors"
    if acc.is_main_process and partial.exists():
        partial.unlink()  # superseded by the finished result
    return final


def _broadcast_object(acc, obj):
    if acc.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj])[0]


def _train_stage(run: _Run, stage: str, student) -> tuple[int, bool, EMA | None]:
    """Train one stage until its iterations are done or should_stop says so. Returns (step, stopped, ema)."""
    cfg, acc = run.cfg, run.accelerator
    rank, world = acc.process_index, acc.num_processes
    total = stage_iterations(cfg, stage)
    # DDP starts every process from rank 0's weights; FSDP2 shards them (every process built the same ones)
    def fake_score(cfg, _teacher, device):  # a copy of the whole teacher, also when the teacher is sharded
        with run.whole_teacher() as whole:
            return build_fake_score(cfg, whole, device)

    trainer = steps.make_trainer(stage, cfg, student, run.teacher, acc, fake_score, run.mode)
    ema = EMA(student, cfg.ema_decay) if cfg.ema_decay > 0 else None
    # one loss generator for every process: each draws the global batch's randoms and keeps its rows (draws.py)
    generator = torch.Generator("cpu").manual_seed(derive_seed(cfg.seed, stage, "loss", 0))
    reader = ShardReader(run.dataset, cfg.batch_size, seed=derive_seed(cfg.seed, stage, "data"),
                         rank=rank, world_size=world)
    state_path = run.out / f"state-{stage}.safetensors"
    step = 0
    if state_path.is_file():
        restored = load_state(state_path, rank=rank, world_size=world, sharded=run.sharded, models=trainer.modules,
                              optimizers=trainer.optimizers, ema=ema, generator=generator)
        step = restored["step"]
        reader.load_state_dict(restored["data"])
    run.log.truncate(stage, step)  # drop what a killed run logged after its last saved state
    if step == 0:
        run.log.write({"event": "start", "stage": stage, "iterations": total, "processes": world,
                       "parallel": run.mode})

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, desc=stage, unit="it", disable=not run.main, dynamic_ncols=True)
    t_window, n_window, stopped = time.perf_counter(), 0, False
    while step < total:
        batch = {k: (v.to(acc.device) if isinstance(v, torch.Tensor) else v) for k, v in reader.next_batch().items()}
        with batch_split(rank, world), same_calls(run.sharded):
            logs = trainer.step(step, batch, generator)
        step += 1
        n_window += 1
        if ema is not None and trainer.student_updated:
            ema.update(student)
        bar.update(1)
        if step == 1:  # what each process holds once the optimisers have their moments, measured from the tensors
            _log_state_bytes(run, stage, trainer)
        if step % cfg.log_every == 0 or step == total:
            values = reduce_logs(logs, acc)
            rate = n_window / max(time.perf_counter() - t_window, 1e-9)
            record = {"stage": stage, "step": step, **values, "it_s": round(rate, 4),
                      "mem_mb": round(memory_mb(acc.device), 1)}
            run.log.write(record)
            if run.main:
                bar.write(summary_line(stage, step, total, values, rate, record["mem_mb"]))
            t_window, n_window = time.perf_counter(), 0
            if run.progress is not None and run.main:
                run.progress(stage, step, total, record)
        elif run.progress is not None and run.main:
            run.progress(stage, step, total, {"stage": stage, "step": step})
        if cfg.validate_every and (step % cfg.validate_every == 0 or step == total):
            _validate(run, stage, step, student, ema)
        stopped = _agree(acc, bool(run.should_stop and run.should_stop()))
        if stopped or step % cfg.checkpoint_every == 0 or step == total:
            _save_state(run, stage, step, trainer, ema, reader, generator)
        if stopped:
            break
    bar.close()
    acc.free_memory()  # drop Accelerate's references to this stage's wrapped loss modules
    if stopped:
        run.log.write({"event": "stopped", "stage": stage, "step": step})
    return step, stopped, ema


def _log_state_bytes(run: _Run, stage: str, trainer) -> None:
    """Log, per process, the bytes of each trained network's parameters and AdamW state (local shards under
    FSDP2), counted from the tensors: the measured side of `tmd distill --plan`."""
    def local(t):
        return t.to_local() if hasattr(t, "to_local") else t

    mine = {}
    for name, (module, opt) in trainer.optimizers.items():
        params = sum(local(p).nbytes for p in module.parameters() if p.requires_grad)  # LoRA mode: not the shared base
        moments = sum(local(v).nbytes for st in opt.state.values() for k, v in st.items()
                      if isinstance(v, torch.Tensor) and k != "step")
        mine[name] = {"params": params, "optimizer": moments}
    teacher = sum(local(p).nbytes for p in run.teacher.parameters())
    every, teachers = [mine], [teacher]
    if run.accelerator.num_processes > 1:
        every = [None] * run.accelerator.num_processes
        torch.distributed.all_gather_object(every, mine)
        teachers = [None] * run.accelerator.num_processes
        torch.distributed.all_gather_object(teachers, teacher)
    run.log.write({"event": "state_bytes", "stage": stage, "parallel": run.mode, "per_process": every,
                   "teacher_per_process": teachers, "teacher": "shard" if run.teacher_template is not None else "replicate"})


def stage_iterations(cfg: TrainConfig, stage: str) -> int:
    """Steps of a stage (stage 2 counts its KD warm-up steps too)."""
    if stage == "stage1":
        return cfg.stage1.iterations
    return cfg.stage2.iterations + cfg.stage2.kd_warmup_iterations


def _agree(acc, flag: bool) -> bool:
    """True on every process if any process wants to stop."""
    if acc.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=acc.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _save_state(run: _Run, stage: str, step: int, trainer, ema, reader, generator) -> None:
    acc = run.accelerator
    snap = rng_snapshot(generator)
    snaps = [snap]
    if acc.num_processes > 1:
        snaps = [None] * acc.num_processes
        torch.distributed.all_gather_object(snaps, snap)
    fingerprint = {} if run.sharded else _fingerprint(trainer.modules)
    if acc.num_processes > 1 and not run.sharded:  # data parallel: every replica must hold the same weights
        prints = [None] * acc.num_processes
        torch.distributed.all_gather_object(prints, fingerprint)
        if any(p != prints[0] for p in prints):
            raise RuntimeError(f"{stage} step {step}: the processes' weights diverged ({prints}); please report this")
    path = run.out / f"state-{stage}.safetensors"
    kwargs = dict(stage=stage, step=step, models=trainer.modules, optimizers=trainer.optimizers, ema=ema,
                  data_state=reader.state_dict(), rng_states=snaps, config=to_dict(run.cfg),
                  extra={"fingerprint": fingerprint, "parallel": run.mode})
    if run.sharded:  # every process writes its shards first; rank 0's file, written last, names the step
        if not run.main:
            save_state(shard_path(path, acc.process_index, step), **kwargs)
        acc.wait_for_everyone()
    if run.main:
        save_state(path, **kwargs)
    acc.wait_for_everyone()
    if run.sharded and not run.main:
        remove_old_shards(path, acc.process_index, keep_step=step)


def _fingerprint(modules: dict) -> dict:
    """Per module, the float64 sum of |w| over all parameters: equal on every replica of a healthy run."""
    with torch.no_grad():
        return {n: float(sum(p.detach().double().abs().sum() for p in m.parameters() if p.requires_grad))
                for n, m in modules.items()}


def _whole_student(run: _Run, student, ema):
    """The student to sample or save, with its EMA weights when the EMA is on: the module itself, or under
    FSDP2 the whole network gathered from every process (a collective), rebuilt on rank 0 (None elsewhere)."""
    if not run.sharded:
        return contextlib.nullcontext(student) if ema is None else ema.swapped(student)
    with contextlib.nullcontext() if ema is None else ema.swapped(student):
        state = full_tensors(student.state_dict(), like=run.template.state_dict())
    return contextlib.nullcontext(rebuild_full(run.template, state) if run.main else None)


def _validate(run: _Run, stage: str, step: int, student, ema) -> None:
    with _whole_student(run, student, ema) as whole:
        if run.main:  # written once, by rank 0
            record, latents, prompts = preview_samples(run.cfg, whole, run.dataset, run.out / "validation", stage,
                                                       step, run.previews)
            run.log.write(record)
            if run.on_preview is not None:
                run.on_preview(stage, step, latents, list(prompts))
            if run.progress is not None:
                run.progress(stage, step, stage_iterations(run.cfg, stage), record)
    run.accelerator.wait_for_everyone()


def _save_student(run: _Run, student, ema, path: Path, done: dict, complete: bool) -> Path:
    """Write the student (its EMA weights when the EMA is on) with provenance, on the main process."""
    from ..checkpoint import atomic_save_safetensors, atomic_write_text, save_tmd
    from ..lora import is_lora
    from ..model import TMDModel

    cfg = run.cfg
    provenance = {
        **run.identity,
        "stages": list(done),
        "iterations": dict(done),
        "complete": complete,
        "run": cfg.name,
        "data": {"folder": Path(cfg.data).name, "num_samples": len(run.dataset)},
        "batch_size": cfg.batch_size,
        "processes": run.accelerator.num_processes,
        "ema_decay": cfg.ema_decay,
        "schedule": to_dict(cfg.schedule),
    }
    with _whole_student(run, student, ema) as whole:
        if run.main:  # only rank 0 writes
            if is_lora(whole):  # LoRA mode: the TMD patch itself, its factors as trained (docs/patches.md)
                from ..lora import patch_from_lora
                from ..patch_file import save_patch
                from ..wan_build import transformer_config_dict

                m = cfg.model
                provenance["lora_mode"] = {"rank": m.lora_rank, "alpha": m.lora_alpha or m.lora_rank,
                                           "targets": list(m.lora_targets)}
                save_patch(patch_from_lora(whole, transformer_config_dict(run.teacher), rank=m.lora_rank,
                                           provenance=provenance), path)
            elif isinstance(whole, TMDModel):
                save_tmd(whole, path, provenance=provenance)
            else:  # DMD2-v baseline: a plain Wan transformer in diffusers keys, config in a sidecar
                from ..loading import sidecar_config_path
                from ..wan_build import transformer_config_dict

                config = json.dumps(transformer_config_dict(whole))
                meta = {"format": "wan-dmd", "transformer_config": config,
                        "provenance": json.dumps(provenance, default=str)}
                atomic_save_safetensors(whole.state_dict(), path, meta)
                atomic_write_text(sidecar_config_path(path), config)
    if run.main:
        run.log.write({"event": "saved", "path": str(path), **{k: provenance[k] for k in ("stages", "iterations")}})
    run.accelerator.wait_for_everyone()
    return path

