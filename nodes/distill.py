"""TMDDistill: distill a TMD student from a Wan teacher inside ComfyUI (docs/method.md §4–6, docs/design.md §7–8).

Files: the run folder is `<ComfyUI output>/tmd_runs/<output_name>/` (the teacher's data set, config.yaml,
log.jsonl, resumable state, partial students); the finished student is copied atomically to
`models/tmd/<output_name>.safetensors` (the first `tmd` model folder), where TMDModelLoader lists it.
"""

from __future__ import annotations

import os

from ..tmd_core.checkpoint import install_checkpoint, load_tmd
from ..tmd_core.errors import InputError
from ..tmd_core.loading import describe_checkpoint, not_a_teacher
from ..tmd_core.patch_file import load_patched
from ..tmd_core.toy.text import ToyTextEncoder
from ..tmd_core.training.distill import (
    check_run_name,
    data_request,
    distill_in_process,
    make_config,
    prompt_lines,
    stage_totals,
)
from ..tmd_core.training.make_data import WAN_NEGATIVE_PROMPT
from ..tmd_core.training.runlog import loss_line
from ..tmd_core.validation import SEED_MAX, check_int, check_seed
from ..tmd_core.worlds import is_toy_teacher, latent_shape_for
from . import host

STAGES = {"stage1+stage2": ("stage1", "stage2"), "stage1": ("stage1",), "stage2": ("stage2",)}
BIG = 10**7


def _int(default, lo, hi, tip, step=1):
    return ("INT", {"default": default, "min": lo, "max": hi, "step": step, "tooltip": tip})


def _check_teacher_file(path: str, head_blocks: int, frames: int, height: int, width: int, data_folder) -> None:
    """head_blocks and the video size against a teacher file's header, before the teacher is loaded."""
    from types import SimpleNamespace

    info = describe_checkpoint(path)
    what = not_a_teacher(info)
    if what:
        raise InputError(f"teacher_name {os.path.basename(path)} is {what} (not a 50-step teacher): pick the Wan teacher it was made from")
    layers = info["num_layers"]
    check_int("head_blocks", head_blocks, 1, layers - 1,
              hint=f"the teacher has {layers} blocks and the backbone needs at least one")
    if not data_folder:
        latent_shape_for(SimpleNamespace(config=SimpleNamespace(**info["transformer_config"])), frames, height, width)


class TMDDistill:
    DESCRIPTION = ("Distills a TMD student from a Wan2.1 teacher: the teacher samples the prompts (or a data folder is "
                   "read), then stage 1 (transition-matching pretraining) and/or stage 2 (DMD2-v with flow-head "
                   "rollout). Interrupt saves a resumable state; queue again with resume on to continue.")
    CATEGORY = "TMD/training"
    RETURN_TYPES = ("TMD_MODEL", "STRING")
    RETURN_NAMES = ("tmd_model", "path")
    OUTPUT_TOOLTIPS = ("The distilled student, ready for TMDSampler.", "Where the student was saved (models/tmd).")
    FUNCTION = "distill"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prompts": ("STRING", {"multiline": True, "default": "", "tooltip": "Training prompts, one per line; the teacher makes samples_per_prompt videos of each (ignored with a data_folder)."}),
                "stages": (list(STAGES), {"default": "stage1+stage2", "tooltip": "Stage 1 (TM-MF pretraining), stage 2 (DMD2-v with rollout), or both. Stage 2 alone starts from the teacher."}),
                "outer_steps": _int(2, 1, 16, "Transitions M the student is trained for (paper: 2 for 1.3B, 1 for 14B)."),
                "inner_steps": _int(2, 1, 32, "Flow-head steps N per transition (paper: 2 for 1.3B, 4 for 14B)."),
                "head_blocks": _int(5, 1, 64, "Blocks H of the flow head, taken from the teacher's last blocks (paper: 5)."),
                "stage1_iterations": _int(3000, 1, BIG, "Stage-1 optimiser steps (paper: 3000)."),
                "stage2_iterations": _int(4000, 1, BIG, "Stage-2 iterations (paper: 4000 for M >= 2, 12000 for M = 1)."),
                "lr_stage1": ("FLOAT", {"default": 3e-5, "min": 1e-8, "max": 1.0, "step": 1e-6, "round": False, "tooltip": "Stage-1 learning rate (AdamW; paper: 3e-5 for 1.3B, 1e-5 for 14B)."}),
                "lr_student": ("FLOAT", {"default": 1e-5, "min": 1e-8, "max": 1.0, "step": 1e-6, "round": False, "tooltip": "Stage-2 learning rate of the student (paper: 1e-5); the fake score and discriminator keep the preset's."}),
                "batch_size": _int(4, 1, 1024, "Samples per optimiser step."),
                "frames": _int(81, 1, 1025, "Video frames of the generated data (Wan2.1: 81; latent frames = (frames - 1) / 4 + 1).", 4),
                "width": _int(832, 16, 4096, "Video width of the generated data in pixels (latent: / 8 for Wan2.1).", 16),
                "height": _int(480, 16, 4096, "Video height of the generated data in pixels (latent: / 8 for Wan2.1).", 16),
                "samples_per_prompt": _int(1, 1, 1000, "Teacher videos per prompt (noise seeds seed, seed + 1, ...)."),
                "teacher_steps": _int(50, 1, 1000, "Euler steps of the teacher when making the data (paper: 50, with CFG)."),
                "guidance_scale": ("FLOAT", {"default": 5.0, "min": 1.0, "max": 30.0, "step": 0.1, "tooltip": "The teacher's CFG: for the data and stage 2's real score (Wan2.1: 5)."}),
                "teacher_shift": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 100.0, "step": 0.1, "tooltip": "Time shift of the teacher's sampler when making the data (Wan2.1: 8)."}),
                "output_name": ("STRING", {"default": "wan21_tmd", "tooltip": "Saved as models/tmd/<name>.safetensors; the run folder is output/tmd_runs/<name>/."}),
                "resume": ("BOOLEAN", {"default": False, "tooltip": "Continue the run of this output_name (after an interrupt) with the same inputs."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip": "Seed of the data's noise (sample i: seed + i) and of training."}),
            },
            "optional": {
                "teacher": ("MODEL", {"tooltip": "The Wan2.1 t2v teacher from UNETLoader (its base weights; LoRAs are ignored)."}),
                "teacher_name": ([host.NO_TEACHER, *host.teacher_choices()], {"default": host.NO_TEACHER, "tooltip": "A teacher file from diffusion_models (or a shipped toy teacher), used when no MODEL is connected."}),
                "clip": ("CLIP", {"tooltip": "Text encoder for the prompts and Wan's negative prompt (CLIPLoader, type wan). Not needed for a toy teacher."}),
                "prompt_file": ("STRING", {"default": "", "tooltip": "A text file of more prompts, one per line (absolute, or relative to ComfyUI's input folder)."}),
                "data_folder": ("STRING", {"default": "", "tooltip": "Train on precomputed shards (tmd make-data) instead of making data: absolute, or relative to ComfyUI's output folder."}),
                "mode": (["full", "lora"], {"default": "full", "tooltip": "full: student and fake score are whole copies of the teacher, every weight trained. lora: one copy of the teacher's weights serves all three, student and fake score train rank-64 LoRAs (far less memory); the result is a TMD patch of that teacher."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def distill(self, prompts, stages, outer_steps, inner_steps, head_blocks, stage1_iterations, stage2_iterations,
                lr_stage1, lr_student, batch_size, frames, width, height, samples_per_prompt, teacher_steps,
                guidance_scale, teacher_shift, output_name, resume, seed, teacher=None, teacher_name=None, clip=None,
                prompt_file=None, data_folder=None, mode="full", unique_id=None):
        name = check_run_name(output_name)
        target = host.tmd_target(name)
        if os.path.exists(target) and not resume:
            raise InputError(f"{target} exists: choose another output_name, or turn resume on to finish its run")
        check_seed("seed", seed, count=samples_per_prompt * max(1, len(prompts.splitlines())))
        if teacher is None and teacher_name and teacher_name != host.NO_TEACHER:
            _check_teacher_file(host.resolve_teacher(teacher_name), head_blocks, frames, height, width, data_folder)
        texts = [] if data_folder else prompt_lines(prompts, prompt_file and host.user_path(prompt_file, "input"))
        contexts = host.encode_texts(clip, texts + [WAN_NEGATIVE_PROMPT]) if clip is not None and texts else None
        negative = contexts.pop() if contexts else None
        run = host.run_folder(name)
        with host.training_mode():
            model, teacher_path = host.teacher_for_training(teacher, teacher_name)
            if contexts is None and texts and is_toy_teacher(model):  # the toy text encoder needs no CLIP
                encoder = ToyTextEncoder()
                contexts, negative = list(encoder.encode(texts)), encoder.null_context(1)[0]
            data = host.user_path(data_folder, "output") if data_folder else os.path.join(run, "data")
            overrides = {"batch_size": batch_size, "seed": seed, "model": {"head_blocks": head_blocks, "mode": mode},
                         "schedule": {"outer_steps": outer_steps, "inner_steps": inner_steps},
                         "stage1": {"iterations": stage1_iterations, "lr": lr_stage1},
                         "stage2": {"iterations": stage2_iterations, "lr_student": lr_student, "real_cfg": guidance_scale}}
            cfg = make_config(model, run, data, name=name, stages=STAGES[stages], overrides=overrides,
                              device=host.training_device(), teacher_path=teacher_path)
            request = None if data_folder else data_request(
                model, texts, contexts, negative, frames=frames, height=height,
                width=width, samples_per_prompt=samples_per_prompt, steps=teacher_steps, shift=teacher_shift,
                guidance_scale=guidance_scale, seed=seed)
            totals = ({"data": len(texts) * samples_per_prompt} if request else {}) | stage_totals(cfg)
            bar = host.TrainingProgress(totals, unique_id)
            result = distill_in_process(model, cfg, data_request=request, resume=resume, progress=bar,
                                        should_stop=bar.should_stop)
            if not result.complete:
                bar.raise_interrupted()
            installed = install_checkpoint(result.path, target)  # lora mode: a TMD patch of `model`, merged into it
            student = load_patched(installed, model) if mode == "lora" else load_tmd(installed)
        text = f"{loss_line(result.last_log)}\nsaved {target}"
        return {"ui": {"text": [text]}, "result": (host.wrap_model(student), target)}
