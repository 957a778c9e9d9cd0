"""The bundled workflows load in the frontend (UI format), validate on the server (API format), and the two
forms of each workflow are the same graph."""

import json
from pathlib import Path

import pytest

from tmd_core.comfy_client import workflow_format

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
# combos that list the user's model files: any name is fine in a shipped workflow
MODEL_FILE_INPUTS = {("CLIPLoader", "clip_name"), ("VAELoader", "vae_name"), ("UNETLoader", "unet_name"),
                     ("TMDModelLoader", "ckpt_name"), ("TMDCheckpointInfo", "ckpt_name"),
                     ("TMDDistill", "teacher_name"), ("TMDApplyToModel", "tmd_name"),
                     ("LoraLoaderModelOnly", "lora_name")}  # fmt: skip
NODE_KEYS = {
    "id",
    "type",
    "pos",
    "size",
    "flags",
    "order",
    "mode",
    "inputs",
    "outputs",
    "properties",
    "widgets_values",
}


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def ids(paths):
    return [p.name for p in paths]


def combo_choices(kind, opts):
    if isinstance(kind, list):
        return kind
    return opts.get("options") if kind == "COMBO" else None


def test_the_bundled_workflows_are_there_with_api_twins():
    assert {"wan21_t2v_1.3b_tmd.json", "wan21_t2v_1.3b_tmd_vs_teacher.json", "tmd_distill_wan21.json",
            "toy_tmd.json"} <= set(ids(UI_FILES))
    assert ids(UI_FILES) == ids(API_FILES)


@pytest.mark.parametrize("path", UI_FILES, ids=ids(UI_FILES))
def test_ui_workflow_is_a_consistent_frontend_graph(path):
    ui = read(path)
    assert workflow_format(ui) == "ui" and ui["version"] == 0.4
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]) and ui["last_node_id"] >= max(nodes)
    assert ui["last_link_id"] >= max(link[0] for link in ui["links"])
    for n in ui["nodes"]:
        assert NODE_KEYS <= set(n), (n["id"], NODE_KEYS - set(n))
        assert n["mode"] == 0 and len(n["pos"]) == 2 and len(n["size"]) == 2
    seen = set()
    for lid, src, src_slot, dst, dst_slot, kind in ui["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert lid in out["links"] and inp["link"] == lid, f"link {lid} not on both of its ends"
        assert out["type"] == inp["type"] == kind, f"link {lid}: {out['type']} -> {inp['type']} ({kind})"
        seen.add(lid)
    referenced = {i["link"] for n in ui["nodes"] for i in n["inputs"] if i["link"] is not None}
    referenced |= {lid for n in ui["nodes"] for o in n["outputs"] for lid in (o["links"] or [])}
    assert referenced == seen, "inputs/outputs name links missing from the links array"
    order = {n["id"]: n["order"] for n in ui["nodes"]}
    assert all(order[src] < order[dst] for _, src, _, dst, _, _ in ui["links"]), "order is not topological"


@pytest.mark.parametrize(
    "path",
    UI_FILES + API_FILES,
    ids=[f"ui/{p.name}" for p in UI_FILES] + [f"api/{p.name}" for p in API_FILES],
)
def test_every_node_type_is_a_pack_node_or_a_native_node_of_comfyui_0_3_64(
    path, object_info, pack_object_info
):
    wf = read(path)
    types = (
        {n["type"] for n in wf["nodes"]}
        if workflow_format(wf) == "ui"
        else {n["class_type"] for n in wf.values()}
    )
    assert not types - set(object_info), f"unknown node types {sorted(types - set(object_info))}"
    assert types & set(pack_object_info), "a bundled workflow without the pack's nodes"


@pytest.mark.parametrize("path", API_FILES, ids=ids(API_FILES))
def test_api_workflow_inputs_exist_and_fit_their_declared_types_and_ranges(path, object_info, converter):
    api = read(path)
    assert workflow_format(api) == "api"
    assert any(object_info[n["class_type"]]["output_node"] for n in api.values()), "nothing would run"
    for nid, node in api.items():
        kind = node["class_type"]
        specs = {name: (t, opts, group) for name, group, t, opts in converter.input_specs(object_info[kind])}
        unknown = set(node["inputs"]) - set(specs)
        assert not unknown, f"node {nid} ({kind}): no inputs named {sorted(unknown)}"
        for name, (t, opts, group) in specs.items():
            where = f"node {nid} ({kind}) input {name!r}"
            if name not in node["inputs"]:
                assert group == "optional", f"{where} is required"
                continue
            value = node["inputs"][name]
            if not converter.is_widget(t, opts):  # a link: [source id, output slot] of the right type
                src, slot = value
                out_types = object_info[api[src]["class_type"]]["output"]
                assert out_types[slot] == t or t == "*", f"{where}: {out_types[slot]} linked to {t}"
                continue
            choices = combo_choices(t, opts)
            if choices is not None:
                if (kind, name) in MODEL_FILE_INPUTS:
                    assert value in choices or (isinstance(value, str) and value.endswith(".safetensors")), where
                else:
                    assert value in choices, f"{where}: {value!r} not in {choices}"
            elif t == "INT":
                assert isinstance(value, int) and opts.get("min", value) <= value <= opts.get("max", value), (
                    where
                )
            elif t == "FLOAT":
                assert isinstance(value, (int, float)) and opts.get("min", value) <= value <= opts.get(
                    "max", value
                ), where
            elif t == "STRING":
                assert isinstance(value, str), where
            elif t == "BOOLEAN":
                assert isinstance(value, bool), where


@pytest.mark.parametrize("path", UI_FILES, ids=ids(UI_FILES))
def test_ui_workflow_and_its_api_twin_are_the_same_graph(path, object_info, converter):
    expected = converter.ui_to_api(read(path), object_info)
    api = read(WORKFLOWS / "api" / path.name)
    assert set(api) == set(expected), "different node ids"
    for nid in expected:
        assert api[nid]["class_type"] == expected[nid]["class_type"], nid
        assert api[nid]["inputs"] == expected[nid]["inputs"], f"node {nid} ({api[nid]['class_type']})"
        assert api[nid].get("_meta", {}).get("title") == expected[nid]["_meta"]["title"], nid


def by_type(api, kind):
    return [n["inputs"] for n in api.values() if n["class_type"] == kind]


def test_tmd_workflow_is_the_native_wan_graph_with_tmd_sampling_and_no_unet():
    api = read(WORKFLOWS / "api" / "wan21_t2v_1.3b_tmd.json")
    types = sorted(n["class_type"] for n in api.values())
    assert types == sorted(["TMDModelLoader", "CLIPLoader", "CLIPTextEncode", "EmptyHunyuanLatentVideo", "TMDSchedule",
                            "TMDSampler", "VAELoader", "VAEDecode", "CreateVideo", "SaveVideo"])  # fmt: skip
    [clip] = by_type(api, "CLIPLoader")
    assert (clip["clip_name"], clip["type"]) == ("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan")
    [latent] = by_type(api, "EmptyHunyuanLatentVideo")
    assert [latent[k] for k in ("width", "height", "length", "batch_size")] == [832, 480, 33, 1]
    assert by_type(api, "VAELoader") == [{"vae_name": "wan_2.1_vae.safetensors"}]
    assert by_type(api, "CreateVideo")[0]["fps"] == 16
    [sampler] = by_type(api, "TMDSampler")
    assert [api[sampler[k][0]]["class_type"] for k in ("model", "positive", "latent", "schedule")] == [
        "TMDModelLoader", "CLIPTextEncode", "EmptyHunyuanLatentVideo", "TMDSchedule"]  # fmt: skip


def test_comparison_workflow_adds_the_50_step_cfg_teacher_on_the_same_prompt_latent_and_seed():
    api = read(WORKFLOWS / "api" / "wan21_t2v_1.3b_tmd_vs_teacher.json")
    tmd = read(WORKFLOWS / "api" / "wan21_t2v_1.3b_tmd.json")
    assert all(api[nid] == node for nid, node in tmd.items() if node["class_type"] != "SaveVideo")
    [k] = by_type(api, "KSampler")
    assert (k["sampler_name"], k["scheduler"], k["steps"], k["cfg"], k["denoise"]) == (
        "euler",
        "simple",
        50,
        5.0,
        1.0,
    )
    assert (
        api[k["model"][0]]["class_type"] == "ModelSamplingSD3"
        and api[k["model"][0]]["inputs"]["shift"] == 8.0
    )
    unet = api[api[k["model"][0]]["inputs"]["model"][0]]
    assert unet["inputs"]["unet_name"] == "wan2.1_t2v_1.3B_fp16.safetensors"
    [tmd_sampler] = by_type(api, "TMDSampler")
    assert k["positive"] == tmd_sampler["positive"] and k["latent_image"] == tmd_sampler["latent"]
    assert k["seed"] == tmd_sampler["seed"]
    negative = api[k["negative"][0]]["inputs"]["text"]
    assert negative.startswith("色调艳丽，过曝，静态") and negative.endswith(
        "倒着走"
    )  # Wan2.1's own negative prompt
    prefixes = sorted(s["filename_prefix"] for s in by_type(api, "SaveVideo"))
    assert prefixes == ["video/wan21_t2v_teacher_50step", "video/wan21_t2v_tmd"]


def test_toy_workflow_runs_on_the_shipped_toy_student_alone_with_its_trained_schedule():
    from tmd_core.training.config import preset

    api = read(WORKFLOWS / "api" / "toy_tmd.json")
    types = sorted(n["class_type"] for n in api.values())
    assert types == sorted(["TMDModelLoader", "TMDToyTextEncode", "TMDToyEmptyLatent", "TMDSchedule", "TMDSampler",
                            "TMDToyDecode", "CreateVideo", "SaveVideo"])  # fmt: skip
    assert by_type(api, "TMDModelLoader")[0]["ckpt_name"] == "toy/toy_tmd.safetensors"  # tmd_core/toy/assets
    trained = preset("toy").schedule
    [sched] = by_type(api, "TMDSchedule")
    assert (sched["outer_steps"], sched["inner_steps"], sched["outer_shift"], sched["inner_shift"]) == (
        trained.outer_steps, trained.inner_steps, trained.outer_shift, trained.inner_shift)  # fmt: skip
    [sampler] = by_type(api, "TMDSampler")
    assert [api[sampler[k][0]]["class_type"] for k in ("model", "positive", "latent", "schedule")] == [
        "TMDModelLoader", "TMDToyTextEncode", "TMDToyEmptyLatent", "TMDSchedule"]  # fmt: skip
    [decode] = by_type(api, "TMDToyDecode")
    [video] = by_type(api, "CreateVideo")
    [save] = by_type(api, "SaveVideo")
    assert api[decode["samples"][0]]["class_type"] == "TMDSampler" and video["fps"] == 8
    assert api[video["images"][0]]["class_type"] == "TMDToyDecode" and api[save["video"][0]]["class_type"] == "CreateVideo"
    assert save["filename_prefix"] == "video/toy_tmd"


def test_distill_workflow_trains_from_the_native_teacher_and_previews_the_student():
    api = read(WORKFLOWS / "api" / "tmd_distill_wan21.json")
    [d] = by_type(api, "TMDDistill")
    assert api[d["teacher"][0]]["inputs"]["unet_name"] == "wan2.1_t2v_1.3B_fp16.safetensors"
    clip = api[d["clip"][0]]["inputs"]
    assert (clip["clip_name"], clip["type"]) == ("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan")
    paper = {"stages": "stage1+stage2", "outer_steps": 2, "inner_steps": 2, "head_blocks": 5, "stage1_iterations": 3000,
             "stage2_iterations": 4000, "lr_stage1": 3e-5, "lr_student": 1e-5, "guidance_scale": 5.0, "frames": 81,
             "width": 832, "height": 480, "resume": False, "teacher_name": "none", "data_folder": ""}  # fmt: skip
    assert {k: d[k] for k in paper} == paper
    assert len(d["prompts"].splitlines()) == 4
    [sampler] = by_type(api, "TMDSampler")
    assert api[sampler["model"][0]]["class_type"] == "TMDDistill" and sampler["model"][1] == 0
    sched = api[sampler["schedule"][0]]["inputs"]
    assert (sched["outer_steps"], sched["inner_steps"]) == (d["outer_steps"], d["inner_steps"])  # as trained
    assert api[sampler["positive"][0]]["inputs"]["clip"] == d["clip"]  # the same text encoder
    [decode] = by_type(api, "VAEDecode")
    assert d["vae"] == decode["vae"] and d["validation_every"] == 250  # previews with the workflow's Wan VAE
    assert d["mode"] == "full"  # every weight trained, as the paper does


# ---------------------------------------------------------------- the converter itself

NODE_DEF = {"input": {"required": {"model": ["MODEL", {}], "seed": ["INT", {"default": 0, "control_after_generate": True}],
                                   "steps": ["INT", {}], "mode": [["a", "b"], {}], "text": ["STRING", {"forceInput": True}]},
                      "optional": {"extra": ["LATENT", {}], "scale": ["FLOAT", {}]}},
            "input_order": {"required": ["model", "seed", "steps", "mode", "text"], "optional": ["extra", "scale"]},
            "output": ["MODEL"], "display_name": "Demo"}  # fmt: skip


def ui_node(widgets, inputs=(), nid=2):
    return {"id": nid, "type": "Demo", "mode": 0, "widgets_values": widgets, "inputs": list(inputs)}


def test_converter_skips_the_control_value_and_force_input_and_maps_links(converter):
    src = {"id": 1, "type": "Demo", "mode": 0, "widgets_values": [1, "fixed", 2, "a", 0.5], "inputs": []}
    dst = ui_node([7, "randomize", 3, "b", 1.5], [{"name": "model", "link": 4}, {"name": "text", "link": None},
                                                  {"name": "extra", "link": None}])  # fmt: skip
    ui = {"nodes": [dst, src], "links": [[4, 1, 0, 2, 0, "MODEL"]]}
    api = converter.ui_to_api(ui, {"Demo": NODE_DEF})
    assert api["2"] == {"inputs": {"seed": 7, "steps": 3, "mode": "b", "scale": 1.5, "model": ["1", 0]},
                        "class_type": "Demo", "_meta": {"title": "Demo"}}  # fmt: skip
    assert list(api) == ["1", "2"]


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (ui_node([7, 3, "b", 1.5]), r"no widget value for input 'scale'"),  # control value missing
        (ui_node([7, "fixed", 3, "b", 1.5, 2]), r"6 widget values, its inputs take 5"),
        (
            ui_node([7, "fixed", 3, "b", 1.5], [{"name": "model", "link": 9}]),
            r"input 'model' has a dangling link",
        ),
        ({**ui_node([]), "type": "Nope"}, r"type 'Nope' is not a registered node"),
        ({**ui_node([7, "fixed", 3, "b", 1.5]), "mode": 4}, r"muted/bypassed nodes are not supported"),
    ],
)
def test_converter_refuses_what_it_cannot_map(converter, node, message):
    with pytest.raises(converter.WorkflowError, match=message):
        converter.ui_to_api({"nodes": [node], "links": []}, {"Demo": NODE_DEF})
