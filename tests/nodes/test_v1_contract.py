"""The V3 nodes keep the V1 nodes' contract (tests/nodes/v1_contract.json, written from the V1 nodes of
commit 5e7713e with these stand-ins): saved workflows name nodes by id, fill widgets by position and links by
slot, so ids, the order, names, types and options of inputs, and the outputs must not change. The model-file
menus are left empty there (they list the machine's files).

The contract file stays what the V1 nodes had. What changed since is listed here, and only what a saved
workflow cannot notice may change: inputs may be added after all of a node's contract inputs, as optional
inputs (a saved workflow fills its widget values by position, so an appended widget takes its default, and
an API prompt that lacks it still validates), each with a tooltip and, for a widget, a default; texts may
change where AMENDED says so."""

import asyncio
import json
from pathlib import Path

import pytest

CONTRACT = json.loads((Path(__file__).parent / "v1_contract.json").read_text(encoding="utf-8"))
MENUS = {("TMDModelLoader", "ckpt_name"), ("TMDCheckpointInfo", "ckpt_name"), ("TMDApplyToModel", "tmd_name"),
         ("TMDDistill", "teacher_name")}  # fmt: skip
# Inputs added after the contract (optional, after the contract's inputs): node id -> names, in order.
ADDED = {"TMDDistill": ["validation_every", "validation_prompts", "vae",  # validation previews (docs/host.md §14)
                        "mode"]}  # LoRA mode (docs/design.md §7)
# Texts changed after the contract: (node id, group, input) -> the option keys that changed and their new values.
AMENDED = {("TMDDistill", "optional", "teacher"): {  # the teacher now takes the MODEL's LoRAs (docs/host.md §13)
    "tooltip": "The Wan2.1 t2v teacher from UNETLoader, with its LoRAs (LoraLoaderModelOnly) applied; its weights "
               "are shared, not copied (fp8 weights are upcast to a bf16 copy)."},
    ("TMDApplyToModel", "required", "tmd_name"): {  # TMD patches too (docs/patches.md §6)
    "tooltip": "From models/tmd: a TMD student (tmd/1) distilled from this MODEL's teacher, or a TMD patch (tmd "
               "extract-lora, LoRA-mode distillation) made for this MODEL's architecture."},
    ("TMDModelLoader", "required", "ckpt_name"): {  # a patch is refused, naming TMDApplyToModel
    "tooltip": "A TMD student (tmd/1) from models/tmd, or a Wan2.1 teacher from models/diffusion_models. A TMD "
               "patch goes to TMD Apply to MODEL (native)."}}
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}  # and combos (a list of options in V1 terms)


def as_v1(node_id: str, info: dict) -> dict:
    """A V3 node's /object_info entry in the V1 contract's terms: a combo is its list of options again, and the
    V3-only option keys (`multiselect`, `multiline: false`) and hidden inputs the host adds are dropped."""
    inputs = {}
    for group in ("required", "optional"):
        items = []
        for name, (kind, opts) in info["input"].get(group, {}).items():
            opts = dict(opts)
            if kind == "COMBO":
                kind = [] if (node_id, name) in MENUS else opts.pop("options")
                opts.pop("options", None)
                opts.pop("multiselect")
            if opts.get("multiline") is False:
                del opts["multiline"]
            items.append([name, kind, opts])
        if items:
            inputs[group] = items
    added = {"prompt", "extra_pnginfo"} if info["output_node"] else set()  # Schema.finalize adds these to outputs
    hidden = sorted(set(info["input"].get("hidden", {})) - added)
    return {"display_name": info["display_name"], "category": info["category"], "description": info["description"],
            "input": inputs, "hidden": hidden, "output": info["output"], "output_name": info["output_name"],
            "output_tooltips": info["output_tooltips"], "output_node": info["output_node"]}  # fmt: skip


@pytest.fixture
def described(pack, nodes):
    classes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    return {c.GET_SCHEMA().node_id: json.loads(json.dumps(c.GET_NODE_INFO_V1())) for c in classes}


def test_the_same_node_ids_are_registered(described):
    assert set(described) == set(CONTRACT)


def amended(node_id: str) -> dict:
    """The contract of `node_id` with the AMENDED texts."""
    v1 = json.loads(json.dumps(CONTRACT[node_id]))
    for group, items in v1["input"].items():
        for name, _kind, opts in items:
            opts.update(AMENDED.get((node_id, group, name), {}))
    return v1


def test_amendments_name_contract_inputs_and_change_only_texts():
    for (node_id, group, name), change in AMENDED.items():
        assert name in [n for n, _, _ in CONTRACT[node_id]["input"][group]], (node_id, group, name)
        assert set(change) <= {"tooltip"}, (node_id, name, change)


@pytest.mark.parametrize("node_id", sorted(CONTRACT))
def test_inputs_outputs_and_texts_are_those_of_the_v1_node(described, node_id):
    v3 = as_v1(node_id, described[node_id])
    v1 = amended(node_id)
    # inputs added since the contract: only after all its inputs, optional, documented
    optional = v3["input"].get("optional", [])
    kept = len(v1["input"].get("optional", []))
    added, v3["input"]["optional"] = optional[kept:], optional[:kept]
    if not v3["input"]["optional"]:
        del v3["input"]["optional"]
    assert [name for name, _, _ in added] == ADDED.get(node_id, []), node_id
    for name, kind, opts in added:
        assert opts.get("tooltip"), (node_id, name)
        if isinstance(kind, list) or kind in WIDGETS:
            assert "default" in opts, (node_id, name)
    for group in ("required", "optional"):  # input by input first: a readable failure
        for old, new in zip(v1["input"].get(group, []), v3["input"].get(group, []), strict=True):
            assert new == old, (node_id, group)
    assert v3 == v1
