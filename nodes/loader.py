"""TMDModelLoader and TMDCheckpointInfo: TMD checkpoints (or Wan teachers split on load) from model folders."""

from __future__ import annotations

import torch

from ..tmd_core.checkpoint import load_tmd
from ..tmd_core.loading import describe_checkpoint, load_teacher
from ..tmd_core.model import TMDModel
from ..tmd_core.validation import check_choice, check_int
from . import host

DTYPES = {"default": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_summary(model: TMDModel) -> dict:
    c = model.tmd_config
    return {"head_blocks": c.head_blocks, "num_layers": c.num_layers, "outer_steps": c.schedule.outer_steps,
            "inner_steps": c.schedule.inner_steps, "trained": bool(c.extra.get("trained", False))}


class TMDModelLoader:
    DESCRIPTION = "Loads a TMD student (tmd/1) or splits a Wan2.1 teacher into backbone + flow head (untrained)."
    CATEGORY = "TMD/loaders"
    RETURN_TYPES = ("TMD_MODEL",)
    RETURN_NAMES = ("tmd_model",)
    OUTPUT_TOOLTIPS = ("The decoupled model, under ComfyUI's memory management.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (host.checkpoint_choices(), {"tooltip": "A tmd/1 checkpoint from models/tmd, or a Wan2.1 teacher from models/diffusion_models."}),
            "head_blocks": ("INT", {"default": 5, "min": 1, "max": 64, "tooltip": "Flow-head size H used only when splitting a plain teacher (ignored for TMD checkpoints). Paper: 5."}),
            "dtype": (list(DTYPES), {"default": "default", "tooltip": "Weight dtype; 'default' keeps the stored dtype."}),
        }}

    def load(self, ckpt_name, head_blocks, dtype):
        path = host.resolve_checkpoint(ckpt_name)
        check_choice("dtype", dtype, list(DTYPES))
        info = describe_checkpoint(path)  # header only: a corrupt file or impossible metadata fails before loading
        kind = "tmd" if info["kind"] == "tmd" else "teacher"
        if kind == "tmd":
            model = load_tmd(path, dtype=DTYPES[dtype])
        else:
            layers = info["num_layers"]
            check_int("head_blocks", head_blocks, 1, layers - 1,
                      hint=f"{ckpt_name} has {layers} blocks and the backbone needs at least one")
            model = TMDModel.from_teacher(load_teacher(path, dtype=DTYPES[dtype]), head_blocks=head_blocks)
        info = {**model_summary(model), "ckpt_name": ckpt_name, "kind": kind}
        return {"ui": {"tmd_info": [info]}, "result": (host.wrap_model(model),)}


class TMDCheckpointInfo:
    DESCRIPTION = ("Shows what a checkpoint holds: sizes, head/backbone split, trained schedule, provenance (TMD students; "
                   "Wan teachers and DMD2-v students too).")
    CATEGORY = "TMD/utils"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("info",)
    OUTPUT_TOOLTIPS = ("The same text as `tmd info`.",)
    FUNCTION = "info"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (host.checkpoint_choices(), {"tooltip": "A tmd/1 checkpoint, or a Wan teacher."})}}

    def info(self, ckpt_name):
        from ..tmd_core.cli.info import format_info

        text = format_info(describe_checkpoint(host.resolve_checkpoint(ckpt_name)))
        return {"ui": {"text": [text]}, "result": (text,)}
