"""The V3 nodes keep the V1 nodes' contract (tests/nodes/v1_contract.json, written from the V1 nodes of
commit 5e7713e with these stand-ins): saved workflows name nodes by id, fill widgets by position and links by
slot, so ids, the order, names, types and options of inputs, and the outputs must not change. The model-file
menus are left empty there (they list the machine's files)."""

import asyncio
import json
from pathlib import Path

import pytest

CONTRACT = json.loads((Path(__file__).parent / "v1_contract.json").read_text(encoding="utf-8"))
MENUS = {("TMDModelLoader", "ckpt_name"), ("TMDCheckpointInfo", "ckpt_name"), ("TMDApplyToModel", "tmd_name"),
         ("TMDDistill", "teacher_name")}  # fmt: skip


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


@pytest.mark.parametrize("node_id", sorted(CONTRACT))
def test_inputs_outputs_and_texts_are_those_of_the_v1_node(described, node_id):
    v3 = as_v1(node_id, described[node_id])
    v1 = CONTRACT[node_id]
    for group in ("required", "optional"):  # input by input first: a readable failure
        for old, new in zip(v1["input"].get(group, []), v3["input"].get(group, []), strict=True):
            assert new == old, (node_id, group)
    assert v3 == v1
