"""One-call distillation: make the teacher's data, then distill, in this process (docs/design.md §7).

`distill_in_process` makes the training set with the in-memory teacher (docs/method.md §6), unless a data
folder is given, then runs `run_distill` (§4–5) on it, all in one run folder:

    <run_dir>/data/                  the teacher's samples (tmd-data/1), when made here
    <run_dir>/config.yaml, log.jsonl, state-stage*.safetensors, stage1.safetensors, <name>.safetensors

One progress callback covers both phases. `should_stop` ends either phase after its current step: the
data set keeps its finished shards, training saves a resumable state and a partial student, and the
same call with `resume=True` continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, InputError
from ..worlds import is_toy_teacher, latent_shape_for
from .config import TrainConfig, apply_overrides, preset
from .previews import OnPreview, PreviewPrompts

# progress(phase, done, total, logs): phase "data" while the teacher makes samples, then "stage1"/"stage2".
Progress = Callable[[str, int, int, dict], None]
DATA_SHARD_SIZE = 8  # samples per shard of a data set made here: what a stop keeps


class _Stopped(Exception):
    """Raised from inside make_data's progress callback when the host asks to stop."""


@dataclass
class DistillResult:
    path: Path | None  # the finished student, the partial one after a stop in training, None if stopped earlier
    complete: bool  # every requested stage ran to its last iteration
    data: Path  # the data folder trained on
    last_log: dict | None  # the last logged training record (losses), if any


def preset_for_teacher(teacher) -> str:
    """The training preset whose unexposed settings (other lrs, update ratios, precision) suit this teacher."""
    if is_toy_teacher(teacher):
        return "toy"
    width = teacher.config.num_attention_heads * teacher.config.attention_head_dim
    return "wan21_14b" if width >= 5120 else "wan21_1p3b"


def make_config(teacher, run_dir, data, *, name: str, stages: Sequence[str], overrides: dict,
                device: str = "auto", teacher_path: str = "") -> TrainConfig:
    """The run config: the teacher's preset, then the host's settings (nested dict of known fields only).

    Stage 2 alone starts from the teacher (there is no stage-1 student in this run).
    """
    cfg = preset(preset_for_teacher(teacher))
    cfg.name, cfg.output_dir, cfg.data, cfg.device = name, str(run_dir), str(data), device
    cfg.stages = tuple(stages)
    cfg.model.teacher = teacher_path
    cfg.stage2.init_from_teacher = "stage1" not in cfg.stages
    return apply_overrides(cfg, overrides, where="settings")


def _fingerprint(prompts: Sequence[str], contexts: Sequence[torch.Tensor]) -> str:
    digest = hashlib.sha256(json.dumps(list(prompts), ensure_ascii=False).encode())
    for c in contexts:
        digest.update(c.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _OnDevice(torch.nn.Module):
    """The teacher on an accelerator for make_data, which draws its noise on the CPU: inputs in, result out."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer
        self.config, self.patch_embedding = transformer.config, transformer.patch_embedding

    def forward(self, x, timestep, encoder_hidden_states, return_dict=False):
        device = self.patch_embedding.weight.device
        out = self.transformer(x.to(device), timestep=timestep.to(device),
                               encoder_hidden_states=encoder_hidden_states.to(device), return_dict=False)[0]
        return (out.cpu(),)


def make_run_data(teacher, folder: Path, *, prompts: Sequence[str], contexts: Sequence[torch.Tensor],
                  negative_context: torch.Tensor | None, latent_shape, samples_per_prompt: int, steps: int,
                  shift: float, guidance_scale: float, seed: int, resume: bool,
                  progress: Progress | None, should_stop: Callable[[], bool] | None, batch_size: int = 1) -> bool:
    """Make (or continue, or reuse) the run's data set. Returns False when stopped before it was complete."""
    from .make_data import make_data

    request = {"prompts_sha256": _fingerprint(prompts, contexts), "samples_per_prompt": int(samples_per_prompt)}
    index = folder / "index.json"
    if index.is_file() and json.loads(index.read_text()).get("complete"):
        made = json.loads(index.read_text())["source"]
        wanted = {"latent_shape": list(latent_shape), "steps": steps, "shift": shift,
                  "guidance_scale": guidance_scale, "seed": seed, **request}
        if any(made.get(k) != v for k, v in wanted.items()):
            raise ConfigError(f"the data in {folder} was made from other prompts or settings: resume with the same "
                              "inputs, or choose another name for a new run")
        return True
    def report(done: int, total: int) -> None:
        if progress is not None:
            progress("data", done, total, {})
        if should_stop is not None and should_stop() and done < total:
            raise _Stopped

    device = next(teacher.parameters()).device
    try:
        make_data(teacher if device.type == "cpu" else _OnDevice(teacher), folder,
                  contexts=[c for c in contexts for _ in range(samples_per_prompt)],
                  prompts=[p for p in prompts for _ in range(samples_per_prompt)],
                  negative_context=negative_context, latent_shape=latent_shape, steps=steps, shift=shift,
                  guidance_scale=guidance_scale, seed=seed, shard_size=DATA_SHARD_SIZE, batch_size=batch_size,
                  source=request,
                  resume=resume, progress=report)
    except _Stopped:
        return False
    return True


def distill_in_process(teacher, cfg: TrainConfig, *, data_request: dict | None = None, resume: bool = False,
                       progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                       previews: PreviewPrompts | None = None, on_preview: OnPreview | None = None) -> DistillResult:
    """Make the data (when `data_request` is given) and distill, in `cfg.output_dir`, on one process.

    Args:
        teacher: the teacher WanTransformer3DModel; a copy is not needed (it is frozen, never changed).
        cfg: from `make_config`; `cfg.data` is the folder to make (with `data_request`) or to read.
        data_request: keyword arguments of `make_run_data` (prompts, contexts, negative_context,
            latent_shape, samples_per_prompt, steps, shift, guidance_scale, seed).
        resume: continue the run (and its data set) in `cfg.output_dir`; without it that folder must be new.
        previews, on_preview: the validation samples' prompts and the host's hook for them (`run_distill`).
    Returns:
        DistillResult; `complete` is False after a stop.
    """
    from ..checkpoint import remove_stale_temporaries
    from .config import check_data_fits_config, check_files, check_settings, teacher_config
    from .loop import make_accelerator, run_distill

    run_dir = Path(cfg.output_dir)
    started = run_dir.is_dir() and any(run_dir.iterdir())
    if not resume and started:
        raise ConfigError(f"{run_dir} already holds a run: resume it (resume = true), or choose another name")
    if resume and not started:
        raise ConfigError(f"resume: there is no run to resume in {run_dir}: turn resume off to start it")
    # every setting, the teacher's own facts and the data against them, before the teacher samples anything
    check_settings(cfg)
    tcfg = teacher_config(cfg, teacher)
    check_files(cfg, tcfg, data=data_request is None)
    if data_request is not None:
        check_data_fits_config(tcfg, list(data_request["latent_shape"]), tcfg["text_dim"], "to be made")
        widths = {int(c.shape[-1]) for c in data_request["contexts"]}
        if widths != {tcfg["text_dim"]}:
            raise InputError(f"the prompts were encoded {sorted(widths)} wide, the teacher reads {tcfg['text_dim']}-wide "
                             "text: encode them with the teacher's own text encoder")
    if previews is not None:
        previews.check_width(tcfg["text_dim"])
    acc = make_accelerator(cfg)
    if data_request is not None:
        teacher = teacher.to(acc.device)
        data = Path(cfg.data)
        remove_stale_temporaries(data)
        try:
            made = make_run_data(teacher, data, resume=resume, progress=progress, should_stop=should_stop,
                                 **data_request)
        except BaseException:
            if not started:  # a failed start leaves nothing that blocks running it again
                _remove_unstarted(run_dir, data)
            raise
        if not made:
            return DistillResult(None, False, data, None)
    last: dict = {}

    def on_step(stage: str, step: int, total: int, logs: dict) -> None:
        if any("loss" in k for k in logs):
            last.clear()
            last.update(logs)
        if progress is not None:
            progress(stage, step, total, logs)

    started_training = (run_dir / "config.yaml").is_file()  # after a stop in the data phase there is no run yet
    path = run_distill(cfg, teacher=teacher, progress=on_step, should_stop=should_stop,
                       resume=resume and started_training, accelerator=acc, previews=previews, on_preview=on_preview)
    complete = path.name == f"{cfg.name}.safetensors"
    return DistillResult(path, complete, Path(cfg.data), dict(last) or _last_logged(run_dir))


def _remove_unstarted(run_dir: Path, data: Path) -> None:
    """Remove a data folder that holds no finished shard (and the run folder, if that leaves it empty)."""
    import shutil

    index = data / "index.json"
    try:
        done = json.loads(index.read_text()).get("num_samples", 0) if index.is_file() else 0
    except ValueError:
        done = 0
    if done == 0 and data.is_dir():
        shutil.rmtree(data, ignore_errors=True)
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


def _last_logged(run_dir: Path) -> dict | None:
    from .runlog import JsonlLog

    records = [r for r in JsonlLog(run_dir / "log.jsonl").records() if any("loss" in k for k in r)]
    return records[-1] if records else None


def stage_totals(cfg: TrainConfig) -> dict[str, int]:
    """Steps per stage of a run (stage 2 includes its KD warm-up)."""
    from .loop import stage_iterations

    return {s: stage_iterations(cfg, s) for s in cfg.stages}


def check_run_name(name: str) -> str:
    """A run/checkpoint name: a plain file name without folders (".safetensors" is dropped)."""
    name = name.strip().removesuffix(".safetensors")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or ".." in name:
        raise InputError(f"output name {name!r} must be a plain file name: letters, digits, '_', '-' and '.'")
    return name


def prompt_lines(text: str, prompt_file: str | None = None) -> list[str]:
    """Non-empty lines of `text`, then of `prompt_file` (if given)."""
    from .make_data import read_prompts

    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return prompts + (read_prompts(prompt_file) if prompt_file else [])


def data_request(teacher, prompts: Sequence[str], contexts: Sequence[torch.Tensor] | None = None,
                 negative_context: torch.Tensor | None = None, *, frames: int, height: int, width: int,
                 samples_per_prompt: int, steps: int, shift: float, guidance_scale: float, seed: int,
                 batch_size: int = 1) -> dict:
    """Keyword arguments of `make_run_data` (for `distill_in_process`).

    Args:
        contexts: per prompt Tensor[L, D] from the host's text encoder, and its negative prompt's embedding
            (for a toy-world teacher: tmd_core.toy.text.ToyTextEncoder's, which needs no weights).
        batch_size: samples per teacher call (1 for Wan2.1; small toy samples go faster in batches).
    """
    if not prompts:
        raise InputError("no prompts: give at least one prompt (one per line) or a prompt file, or a data folder")
    if contexts is None:
        if is_toy_teacher(teacher):
            raise InputError("no contexts for the toy prompts: encode them with tmd_core.toy.text.ToyTextEncoder")
        raise InputError("no text encoder for the prompts: connect a CLIP (CLIPLoader, type wan) to encode them, "
                         "or give a data folder of precomputed samples")
    return {"prompts": list(prompts), "contexts": list(contexts), "negative_context": negative_context,
            "latent_shape": latent_shape_for(teacher, frames, height, width), "samples_per_prompt": samples_per_prompt,
            "steps": steps, "shift": shift, "guidance_scale": guidance_scale, "seed": seed, "batch_size": batch_size}


__all__ = ["DistillResult", "PreviewPrompts", "check_run_name", "data_request", "distill_in_process", "make_config", "make_run_data",
           "preset_for_teacher", "prompt_lines", "stage_totals"]
