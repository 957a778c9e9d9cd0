"""The real ComfyUI loads this pack: node definitions in /object_info, web extension served."""

import json

import requests
from comfy_host import PACK_FOLDER, REPO

PACK_NODES = {  # node id -> (required inputs, optional inputs) the pack declares (docs/design.md §8)
    "TMDModelLoader": ({"ckpt_name", "head_blocks", "dtype"}, set()),
    "TMDSchedule": ({"outer_steps", "inner_steps", "outer_shift", "inner_shift"}, {"sigmas"}),
    "TMDSampler": ({"model", "positive", "latent", "schedule", "seed"}, set()),
    "TMDCheckpointInfo": ({"ckpt_name"}, set()),
    "TMDDistill": ({"prompts", "stages", "outer_steps", "inner_steps", "head_blocks", "stage1_iterations",
                    "stage2_iterations", "lr_stage1", "lr_student", "batch_size", "frames", "width", "height",
                    "samples_per_prompt", "teacher_steps", "guidance_scale", "teacher_shift", "output_name", "resume",
                    "seed"}, {"teacher", "teacher_name", "clip", "prompt_file", "data_folder"}),
    "TMDToyTextEncode": ({"text"}, set()),
    "TMDToyEmptyLatent": ({"batch_size"}, set()),
    "TMDToyDecode": ({"samples", "scale"}, set()),
    "TMDApplyToModel": ({"model", "tmd_name"}, set()),
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


def check_listed(info: dict, nodes: dict) -> None:
    missing = sorted(set(nodes) - set(info))
    assert not missing, f"nodes not registered: {missing}"
    for name, (required, optional) in nodes.items():
        node = info[name]
        inputs = node["input"]
        assert required <= set(inputs.get("required", {})), (name, inputs.get("required"))
        assert optional <= set(inputs.get("optional", {})), (name, inputs.get("optional"))
        assert node["category"].startswith("TMD"), (name, node["category"])
        for group in ("required", "optional"):
            for inp, spec in inputs.get(group, {}).items():
                opts = spec[1] if len(spec) > 1 else {}
                assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"
        assert node["description"], name


def test_object_info_lists_the_pack_nodes_with_their_inputs(comfyui):
    check_listed(object_info(comfyui), PACK_NODES)


def test_distill_and_toy_nodes_have_their_categories_and_the_distill_node_is_an_output(comfyui):
    info = object_info(comfyui)
    assert info["TMDDistill"]["category"] == "TMD/training" and info["TMDDistill"]["output_node"] is True
    assert info["TMDDistill"]["output"] == ["TMD_MODEL", "STRING"]
    assert info["TMDDistill"]["input"]["optional"]["teacher"][0] == "MODEL"
    assert info["TMDDistill"]["input"]["optional"]["clip"][0] == "CLIP"
    assert {info[n]["category"] for n in ("TMDToyTextEncode", "TMDToyEmptyLatent", "TMDToyDecode")} == {"TMD/toy"}
    assert info["TMDToyDecode"]["output"] == ["IMAGE"] and info["TMDToyTextEncode"]["output"] == ["CONDITIONING"]


def test_model_loader_lists_tmd_checkpoints_and_teachers_from_the_model_folders(comfyui, wan_models):
    info = object_info(comfyui)
    kind, opts = info["TMDModelLoader"]["input"]["required"]["ckpt_name"]
    assert kind == "COMBO"  # a V3 combo: the menu is in the options
    choices = opts["options"]
    assert wan_models.tmd in choices and f"diffusion_models/{wan_models.teacher}" in choices
    assert choices.index(wan_models.tmd) < choices.index(f"diffusion_models/{wan_models.teacher}")
    assert wan_models.vae in info["VAELoader"]["input"]["required"]["vae_name"][0]
    assert info["TMDTestConditioning"]["category"] == "TMD/testing"  # the test-only pack is loaded too


def test_web_extension_is_served(comfyui):
    listed = requests.get(comfyui.url + "/extensions", timeout=30).json()
    for name in ("tmd.js", "tmd_logic.js"):
        path = f"/extensions/{PACK_FOLDER}/{name}"
        assert path in listed
        r = requests.get(comfyui.url + path, timeout=30)
        assert r.status_code == 200 and "javascript" in r.headers["Content-Type"]
        assert r.text == (REPO / "web" / name).read_text(encoding="utf-8")


def test_bundled_workflows_are_listed_as_the_pack_templates_and_served(comfyui):
    listed = requests.get(comfyui.url + "/workflow_templates", timeout=30).json()
    shipped = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    assert (
        sorted(listed[PACK_FOLDER]) == shipped
    )  # workflows/api/ (API format) is not offered to the frontend
    for name in shipped:
        r = requests.get(f"{comfyui.url}/api/workflow_templates/{PACK_FOLDER}/{name}.json", timeout=30)
        assert r.status_code == 200 and r.json() == json.loads(
            (REPO / "workflows" / f"{name}.json").read_text()
        )


def test_checkpoint_info_route_answers_h_and_l_of_a_menu_entry(comfyui):
    # nodes/routes.py: what the web extension asks when the loader's ckpt_name changes
    from tmd_core.loading import describe_checkpoint

    header = describe_checkpoint(REPO / "tmd_core" / "toy" / "assets" / "toy_tmd.safetensors")
    for prefix in ("", "/api"):  # the frontend's api.fetchApi uses /api
        r = requests.get(comfyui.url + prefix + "/tmd/checkpoint_info", params={"ckpt_name": "toy/toy_tmd.safetensors"}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json() == {"tmd_info": [{"ckpt_name": "toy/toy_tmd.safetensors", "kind": "tmd",
                                          "num_layers": header["num_layers"], "head_blocks": header["head_blocks"]}]}
    for bad in ("../../etc/passwd", "absent.safetensors"):
        r = requests.get(comfyui.url + "/tmd/checkpoint_info", params={"ckpt_name": bad}, timeout=30)
        assert r.status_code == 400 and "not in the TMD loader's menu" in r.json()["error"]
