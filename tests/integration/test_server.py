"""The real ComfyUI loads this pack: node definitions in /object_info, web extension served."""

import pytest
import requests
from comfy_host import PACK_FOLDER, REPO

PACK_NODES = {  # node id -> (required inputs, optional inputs) the pack declares (DESIGN.md "ComfyUI integration")
    "TMDModelLoader": ({"ckpt_name", "head_blocks", "dtype"}, set()),
    "TMDSchedule": ({"outer_steps", "inner_steps", "outer_shift", "inner_shift"}, {"sigmas"}),
    "TMDSampler": ({"model", "positive", "latent", "schedule", "seed"}, set()),
    "TMDDistill": (set(), set()),
}


def object_info(server) -> dict:
    r = requests.get(server.url + "/object_info", timeout=60)
    r.raise_for_status()
    return r.json()


def test_object_info_lists_the_stock_nodes(comfyui):
    info = object_info(comfyui)
    assert len(info) >= 478  # a stock 0.3.64 has 478 (shared/comfyui/object_info-0.3.64.json)
    assert info["EmptyHunyuanLatentVideo"]["input"]["required"]["length"][1]["default"] == 25
    assert "(IMPORT FAILED)" not in comfyui.log.read_text()


@pytest.mark.xfail(strict=False, reason="the pack's nodes are written in part 2 (issue 5)")
def test_object_info_lists_the_pack_nodes_with_their_inputs(comfyui):
    info = object_info(comfyui)
    missing = sorted(set(PACK_NODES) - set(info))
    assert not missing, f"nodes not registered: {missing}"
    for name, (required, optional) in PACK_NODES.items():
        node = info[name]
        inputs = node["input"]
        assert required <= set(inputs.get("required", {})), (name, inputs.get("required"))
        assert optional <= set(inputs.get("optional", {})), (name, inputs.get("optional"))
        assert node["category"].startswith("TMD"), (name, node["category"])
        for group in ("required", "optional"):
            for inp, spec in inputs.get(group, {}).items():
                opts = spec[1] if len(spec) > 1 else {}
                assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"


def test_web_extension_is_served(comfyui):
    listed = requests.get(comfyui.url + "/extensions", timeout=30).json()
    for name in ("tmd.js", "tmd_logic.js"):
        path = f"/extensions/{PACK_FOLDER}/{name}"
        assert path in listed
        r = requests.get(comfyui.url + path, timeout=30)
        assert r.status_code == 200 and "javascript" in r.headers["Content-Type"]
        assert r.text == (REPO / "web" / name).read_text(encoding="utf-8")
