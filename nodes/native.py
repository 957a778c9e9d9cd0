"""TMDApplyToModel: a native Wan2.1 MODEL (UNETLoader, LoRAs, fp8) + TMD weights -> TMD_MODEL for TMDSampler.

The TMD weights are a full TMD student or a TMD patch (docs/patches.md), told apart by the file's header."""

from __future__ import annotations

from comfy_api.latest import io

from ..tmd_core.errors import InputError
from ..tmd_core.loading import describe_checkpoint
from . import host
from .native_patch import apply_tmd, patch_weights, student_weights

SOURCES = {"tmd": ("student", student_weights), "tmd-patch": ("patch", patch_weights)}


def tmd_choices() -> list[str]:
    """Files of the `tmd` model folders (students and patches), then the shipped toy students (refused for a Wan
    MODEL, with the reason)."""
    toy_teachers = set(host.toy_choices("teacher"))
    return [n for n in host.checkpoint_choices() if not n.startswith(host.TEACHER_FOLDER + "/") and n not in toy_teachers]


class TMDApplyToModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TMDApplyToModel",
            display_name="TMD Apply to MODEL (native)",
            category="TMD/loaders",
            description=("Runs TMD on a native Wan2.1 t2v MODEL: the TMD checkpoint's changed weights become weight "
                         "patches of the MODEL (stacking with its LoRAs), its fusion layer and gap embedding are added; "
                         "ComfyUI loads, casts (fp8 too) and offloads everything as for any MODEL."),
            inputs=[
                io.Model.Input("model", tooltip="A Wan2.1 text-to-video MODEL (UNETLoader, any weight dtype), LoRAs applied before this node stack with TMD."),
                io.Combo.Input("tmd_name", options=tmd_choices(), tooltip="From models/tmd: a TMD student (tmd/1) distilled from this MODEL's teacher, or a TMD patch (tmd extract-lora, LoRA-mode distillation) made for this MODEL's architecture."),
            ],
            outputs=[host.TMD_MODEL.Output(display_name="tmd_model", tooltip="The MODEL split into backbone + flow head, for TMDSampler.")],
        )  # fmt: skip

    @classmethod
    def validate_inputs(cls, tmd_name):
        return host.check_menus(cls, tmd_name=tmd_name)

    @classmethod
    def execute(cls, model, tmd_name) -> io.NodeOutput:
        path = host.resolve_checkpoint(tmd_name)
        info = describe_checkpoint(path)  # header only: a corrupt file fails here, before the MODEL is touched
        if info["kind"] not in SOURCES:
            raise InputError(f"{tmd_name} is a {info['kind']} file, not a TMD checkpoint: pick a TMD student or a TMD "
                             "patch (tmd/1) from models/tmd")
        source, read = SOURCES[info["kind"]]
        weights = read(path, model)
        out = apply_tmd(model, weights)
        c = weights.tmd_config
        ui = {"head_blocks": c.head_blocks, "num_layers": c.num_layers, "outer_steps": c.schedule.outer_steps,
              "inner_steps": c.schedule.inner_steps, "trained": bool(c.extra.get("trained", False)),
              "ckpt_name": tmd_name, "kind": "native", "source": source,
              "patched_weights": len(weights.weight_patches)}
        if source == "patch":
            ui["lora_rank"] = info["lora"].get("rank")
        return io.NodeOutput(out, ui={"tmd_info": [ui]})
