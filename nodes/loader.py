"""TMDModelLoader and TMDCheckpointInfo: TMD checkpoints (or Wan teachers split on load) from model folders."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..tmd_core.checkpoint import load_tmd
from ..tmd_core.errors import InputError
from ..tmd_core.loading import describe_checkpoint, load_teacher
from ..tmd_core.model import TMDModel
from ..tmd_core.validation import check_choice, check_int
from . import host

DTYPES = {"default": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_summary(model: TMDModel) -> dict:
    c = model.tmd_config
    return {"head_blocks": c.head_blocks, "num_layers": c.num_layers, "outer_steps": c.schedule.outer_steps,
            "inner_steps": c.schedule.inner_steps, "trained": bool(c.extra.get("trained", False))}


class TMDModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TMDModelLoader",
            display_name="TMD Model Loader",
            category="TMD/loaders",
            description="Loads a TMD student (tmd/1) or splits a Wan2.1 teacher into backbone + flow head (untrained).",
            inputs=[
                io.Combo.Input("ckpt_name", options=host.checkpoint_choices(), tooltip="A TMD student (tmd/1) from models/tmd, or a Wan2.1 teacher from models/diffusion_models. A TMD patch goes to TMD Apply to MODEL (native)."),
                io.Int.Input("head_blocks", default=5, min=1, max=64, tooltip="Flow-head size H used only when splitting a plain teacher (ignored for TMD checkpoints). Paper: 5."),
                io.Combo.Input("dtype", options=list(DTYPES), default="default", tooltip="Weight dtype; 'default' keeps the stored dtype."),
            ],
            outputs=[host.TMD_MODEL.Output(display_name="tmd_model", tooltip="The decoupled model, under ComfyUI's memory management.")],
        )  # fmt: skip

    @classmethod
    def validate_inputs(cls, ckpt_name, dtype):
        return host.check_menus(cls, ckpt_name=ckpt_name, dtype=dtype)

    @classmethod
    def execute(cls, ckpt_name, head_blocks, dtype) -> io.NodeOutput:
        path = host.resolve_checkpoint(ckpt_name)
        check_choice("dtype", dtype, list(DTYPES))
        info = describe_checkpoint(path)  # header only: a corrupt file or impossible metadata fails before loading
        if info["kind"] == "tmd-patch":
            raise InputError(f"{ckpt_name} is a TMD patch, which needs the teacher MODEL it was made for: load the "
                             "teacher with UNETLoader and apply the patch with TMD Apply to MODEL (native) "
                             "(TMDApplyToModel)")
        kind = "tmd" if info["kind"] == "tmd" else "teacher"
        if kind == "tmd":
            model = load_tmd(path, dtype=DTYPES[dtype])
        else:
            layers = info["num_layers"]
            check_int("head_blocks", head_blocks, 1, layers - 1,
                      hint=f"{ckpt_name} has {layers} blocks and the backbone needs at least one")
            model = TMDModel.from_teacher(load_teacher(path, dtype=DTYPES[dtype]), head_blocks=head_blocks)
        info = {**model_summary(model), "ckpt_name": ckpt_name, "kind": kind}
        return io.NodeOutput(host.wrap_model(model), ui={"tmd_info": [info]})


class TMDCheckpointInfo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TMDCheckpointInfo",
            display_name="TMD Checkpoint Info",
            category="TMD/utils",
            description=("Shows what a checkpoint holds: sizes, head/backbone split, trained schedule, provenance (TMD "
                         "students; Wan teachers and DMD2-v students too)."),
            inputs=[io.Combo.Input("ckpt_name", options=host.checkpoint_choices(), tooltip="A tmd/1 checkpoint, or a Wan teacher.")],
            outputs=[io.String.Output(display_name="info", tooltip="The same text as `tmd info`.")],
            is_output_node=True,
        )  # fmt: skip

    @classmethod
    def validate_inputs(cls, ckpt_name):
        return host.check_menus(cls, ckpt_name=ckpt_name)

    @classmethod
    def execute(cls, ckpt_name) -> io.NodeOutput:
        from ..tmd_core.cli.info import format_info

        text = format_info(describe_checkpoint(host.resolve_checkpoint(ckpt_name)))
        return io.NodeOutput(text, ui={"text": [text]})
