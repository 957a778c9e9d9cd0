"""TMDDistill: distill a TMD student from a Wan teacher inside ComfyUI (docs/method.md §4–6, docs/design.md §7–8).

Files: the run folder is `<ComfyUI output>/tmd_runs/<output_name>/` (the teacher's data set, config.yaml,
log.jsonl, resumable state, partial students); the finished student is copied atomically to
`models/tmd/<output_name>.safetensors` (the first `tmd` model folder), where TMDModelLoader lists it.
"""

from __future__ import annotations

import os

from comfy_api.latest import io

from ..tmd_core.checkpoint import install_checkpoint, load_tmd
from ..tmd_core.errors import InputError
from ..tmd_core.loading import describe_checkpoint, not_a_teacher
from ..tmd_core.patch_file import load_patched
from ..tmd_core.toy.text import ToyTextEncoder
from ..tmd_core.training.config import MODEL_MODES
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
from ..tmd_core.validation import SEED_MAX, check_choice, check_int, check_seed
from ..tmd_core.worlds import is_toy_teacher, latent_shape_for
from . import host
from .distill_previews import DEFAULT_EVERY, PreviewWriter, preview_prompts

STAGES = {"stage1+stage2": ("stage1", "stage2"), "stage1": ("stage1",), "stage2": ("stage2",)}
BIG = 10**7


def _int(name, default, lo, hi, tip, step=1):
    return io.Int.Input(name, default=default, min=lo, max=hi, step=step, tooltip=tip)


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


class TMDDistill(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TMDDistill",
            display_name="TMD Distill (train from teacher)",
            category="TMD/training",
            description=("Distills a TMD student from a Wan2.1 teacher: the teacher samples the prompts (or a data folder is "
                         "read), then stage 1 (transition-matching pretraining) and/or stage 2 (DMD2-v with flow-head "
                         "rollout). Interrupt saves a resumable state; queue again with resume on to continue."),
            inputs=[
                io.String.Input("prompts", multiline=True, default="", tooltip="Training prompts, one per line; the teacher makes samples_per_prompt videos of each (ignored with a data_folder)."),
                io.Combo.Input("stages", options=list(STAGES), default="stage1+stage2", tooltip="Stage 1 (TM-MF pretraining), stage 2 (DMD2-v with rollout), or both. Stage 2 alone starts from the teacher."),
                _int("outer_steps", 2, 1, 16, "Transitions M the student is trained for (paper: 2 for 1.3B, 1 for 14B)."),
                _int("inner_steps", 2, 1, 32, "Flow-head steps N per transition (paper: 2 for 1.3B, 4 for 14B)."),
                _int("head_blocks", 5, 1, 64, "Blocks H of the flow head, taken from the teacher's last blocks (paper: 5)."),
                _int("stage1_iterations", 3000, 1, BIG, "Stage-1 optimiser steps (paper: 3000)."),
                _int("stage2_iterations", 4000, 1, BIG, "Stage-2 iterations (paper: 4000 for M >= 2, 12000 for M = 1)."),
                io.Float.Input("lr_stage1", default=3e-5, min=1e-8, max=1.0, step=1e-6, round=False, tooltip="Stage-1 learning rate (AdamW; paper: 3e-5 for 1.3B, 1e-5 for 14B)."),
                io.Float.Input("lr_student", default=1e-5, min=1e-8, max=1.0, step=1e-6, round=False, tooltip="Stage-2 learning rate of the student (paper: 1e-5); the fake score and discriminator keep the preset's."),
                _int("batch_size", 4, 1, 1024, "Samples per optimiser step."),
                _int("frames", 81, 1, 1025, "Video frames of the generated data (Wan2.1: 81; latent frames = (frames - 1) / 4 + 1).", 4),
                _int("width", 832, 16, 4096, "Video width of the generated data in pixels (latent: / 8 for Wan2.1).", 16),
                _int("height", 480, 16, 4096, "Video height of the generated data in pixels (latent: / 8 for Wan2.1).", 16),
                _int("samples_per_prompt", 1, 1, 1000, "Teacher videos per prompt (noise seeds seed, seed + 1, ...)."),
                _int("teacher_steps", 50, 1, 1000, "Euler steps of the teacher when making the data (paper: 50, with CFG)."),
                io.Float.Input("guidance_scale", default=5.0, min=1.0, max=30.0, step=0.1, tooltip="The teacher's CFG: for the data and stage 2's real score (Wan2.1: 5)."),
                io.Float.Input("teacher_shift", default=8.0, min=0.1, max=100.0, step=0.1, tooltip="Time shift of the teacher's sampler when making the data (Wan2.1: 8)."),
                io.String.Input("output_name", default="wan21_tmd", tooltip="Saved as models/tmd/<name>.safetensors; the run folder is output/tmd_runs/<name>/."),
                io.Boolean.Input("resume", default=False, tooltip="Continue the run of this output_name (after an interrupt) with the same inputs."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, tooltip="Seed of the data's noise (sample i: seed + i) and of training."),
                # optional: absent from the call when not linked (or, for widgets, not in the API prompt)
                io.Model.Input("teacher", optional=True, tooltip="The Wan2.1 t2v teacher from UNETLoader, with its LoRAs (LoraLoaderModelOnly) applied; its weights are shared, not copied (fp8 weights are upcast to a bf16 copy)."),
                io.Combo.Input("teacher_name", options=[host.NO_TEACHER, *host.teacher_choices()], default=host.NO_TEACHER, optional=True, tooltip="A teacher file from diffusion_models (or a shipped toy teacher), used when no MODEL is connected."),
                io.Clip.Input("clip", optional=True, tooltip="Text encoder for the prompts and Wan's negative prompt (CLIPLoader, type wan). Not needed for a toy teacher."),
                io.String.Input("prompt_file", default="", optional=True, tooltip="A text file of more prompts, one per line (absolute, or relative to ComfyUI's input folder)."),
                io.String.Input("data_folder", default="", optional=True, tooltip="Train on precomputed shards (tmd make-data) instead of making data: absolute, or relative to ComfyUI's output folder."),
                io.Int.Input("validation_every", default=DEFAULT_EVERY, min=0, max=BIG, optional=True, tooltip="Preview the student every K steps and at the end of each stage (0: off): shown on the node, saved in output/tmd_runs/<name>/validation/."),
                io.String.Input("validation_prompts", multiline=True, default="", optional=True, tooltip="Preview prompts, one per line (prompt i: seed 0, 1, 0, ...); empty: the first two training prompts."),
                io.Vae.Input("vae", optional=True, tooltip="The Wan VAE (VAELoader) to decode the previews; without it only their latents are saved. A toy teacher uses the toy VAE."),
                io.Combo.Input("mode", options=list(MODEL_MODES), default="full", optional=True, tooltip="full: student and fake score are whole copies of the teacher, every weight trained. lora: one copy of the teacher's weights serves all three, student and fake score train rank-64 LoRAs (far less memory); the result is a TMD patch of that teacher."),
            ],
            outputs=[
                host.TMD_MODEL.Output(display_name="tmd_model", tooltip="The distilled student, ready for TMDSampler."),
                io.String.Output(display_name="path", tooltip="Where the student was saved (models/tmd)."),
            ],
            hidden=[io.Hidden.unique_id],  # the node's id: live text on the node (host.TrainingProgress)
            is_output_node=True,
        )  # fmt: skip

    @classmethod
    def validate_inputs(cls, stages, teacher_name=None, mode=None):
        return host.check_menus(cls, stages=stages, teacher_name=teacher_name, mode=mode)

    @classmethod
    def execute(cls, prompts, stages, outer_steps, inner_steps, head_blocks, stage1_iterations, stage2_iterations,
                lr_stage1, lr_student, batch_size, frames, width, height, samples_per_prompt, teacher_steps,
                guidance_scale, teacher_shift, output_name, resume, seed, teacher=None, teacher_name=None, clip=None,
                prompt_file=None, data_folder=None, validation_every=None, validation_prompts=None,
                vae=None, mode=None) -> io.NodeOutput:
        unique_id = cls.hidden.unique_id
        mode = check_choice("mode", "full" if mode is None else mode, MODEL_MODES,  # None: absent from the prompt
                            "lora trains LoRAs on one shared copy of the teacher")
        if validation_every is not None:
            check_int("validation_every", validation_every, 0, hint="0 turns the previews off")
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
                         "validate_every": DEFAULT_EVERY if validation_every is None else validation_every,
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
            previews = preview_prompts(validation_prompts, texts, contexts, clip, model, len(cfg.validation_seeds))
            writer = PreviewWriter(run, model, vae, bar)
            result = distill_in_process(model, cfg, data_request=request, resume=resume, progress=bar,
                                        should_stop=bar.should_stop, previews=previews, on_preview=writer)
            if not result.complete:
                bar.raise_interrupted()
            installed = install_checkpoint(result.path, target)  # lora mode: a TMD patch of `model`, merged into it
            student = load_patched(installed, model) if mode == "lora" else load_tmd(installed)
        text = f"{loss_line(result.last_log)}\nsaved {target}"
        return io.NodeOutput(host.wrap_model(student), target, ui={"text": [text], **writer.ui()})
