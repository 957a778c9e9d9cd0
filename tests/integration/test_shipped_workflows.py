"""Every shipped workflow, unchanged, against the real server's V3 node definitions (docs/host.md §2).

UI form (workflows/*.json): every node type is registered, every node's widget values fill its widget inputs
by position (no value left over or missing), every link joins an output slot and an input of its type, and
the API graph the frontend would send is the shipped API twin. API form (workflows/api/*.json): POST /prompt
validates it; the only errors allowed are model files this test server does not have (the Wan workflows name
the real Wan2.1 files), and a workflow with nothing missing (the toy one) runs to the end.
"""

import json
import time

import pytest
import requests
from comfy_host import REPO

from tmd_core.comfy_client import ComfyClient

UI_FILES = sorted((REPO / "workflows").glob("*.json"))
API_FILES = sorted((REPO / "workflows" / "api").glob("*.json"))
MODEL_FILE_INPUTS = {("CLIPLoader", "clip_name"), ("VAELoader", "vae_name"), ("UNETLoader", "unet_name"),
                     ("TMDModelLoader", "ckpt_name"), ("TMDCheckpointInfo", "ckpt_name"),
                     ("TMDDistill", "teacher_name"), ("TMDApplyToModel", "tmd_name"),
                     ("LoraLoaderModelOnly", "lora_name")}  # fmt: skip
RUNNABLE = {"toy_tmd.json"}  # needs only the pack's own files; the others name the real Wan2.1 files


@pytest.fixture(scope="module")
def object_info(comfyui) -> dict:
    r = requests.get(comfyui.url + "/object_info", timeout=60)
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def converter():
    import importlib.util

    spec = importlib.util.spec_from_file_location("workflow_to_api", REPO / "scripts" / "workflow_to_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", UI_FILES, ids=[p.name for p in UI_FILES])
def test_ui_workflow_fits_the_served_definitions_widget_by_widget_and_slot_by_slot(path, object_info, converter):
    ui = read(path)
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert {n["type"] for n in ui["nodes"]} <= set(object_info)
    assert any(n["type"].startswith("TMD") for n in ui["nodes"])
    for node in ui["nodes"]:  # raises WorkflowError on a widget value too many or too few
        converter.widget_inputs(node, object_info[node["type"]])
    for _lid, src, src_slot, dst, dst_slot, kind in ui["links"]:
        assert object_info[nodes[src]["type"]]["output"][src_slot] == kind, (path.name, src, src_slot)
        name = nodes[dst]["inputs"][dst_slot]["name"]
        specs = {n: t for n, _group, t, _opts in converter.input_specs(object_info[nodes[dst]["type"]])}
        assert specs[name] == kind, (path.name, dst, name)
    expected = converter.ui_to_api(ui, object_info)
    api = read(REPO / "workflows" / "api" / path.name)
    assert {k: (v["class_type"], v["inputs"]) for k, v in api.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in expected.items()
    }


def failing_inputs(body: dict) -> set:
    """(class_type, input name) of every error of a 400 answer of POST /prompt; a custom validation error
    (the pack's menus, docs/host.md §2) names the input in its details, `<input> - <name>: '<value>' not in`."""
    out = set()
    for node in body["node_errors"].values():
        for err in node["errors"]:
            if err["type"] == "custom_validation_failed":
                name = err["details"].split(" - ", 1)[1].split(":", 1)[0]
            else:
                assert err["type"] == "value_not_in_list", err
                name = err["extra_info"]["input_name"]
            out.add((node["class_type"], name))
    return out


@pytest.mark.parametrize("path", API_FILES, ids=[p.name for p in API_FILES])
def test_api_workflow_validates_unchanged_but_for_model_files_absent_here(path, comfyui, object_info):
    api = read(path)
    r = requests.post(comfyui.url + "/prompt", json={"prompt": api, "client_id": "tmd-shipped"}, timeout=60)
    assert (r.status_code == 200) == (path.name in RUNNABLE), r.text
    if r.status_code == 400:
        body = r.json()
        assert body["error"]["type"] == "prompt_outputs_failed_validation", body
        bad = failing_inputs(body)
        assert bad and bad <= MODEL_FILE_INPUTS, body
        for kind, name in bad:  # really absent: the value is not in the served menu
            [value] = {n["inputs"][name] for n in api.values() if n["class_type"] == kind}
            spec = object_info[kind]["input"]["required"].get(name) or object_info[kind]["input"]["optional"][name]
            assert value not in (spec[1]["options"] if spec[0] == "COMBO" else spec[0]), (kind, name, value)
        return
    assert r.status_code == 200 and r.json()["node_errors"] == {}, r.text
    prompt_id, client = r.json()["prompt_id"], ComfyClient(comfyui.url)
    deadline = time.monotonic() + 600
    while (entry := client.history(prompt_id)) is None or not entry.get("status", {}).get("completed"):
        assert entry is None or entry.get("status", {}).get("status_str") != "error", entry
        assert time.monotonic() < deadline, "the workflow did not finish in 600 s"
        time.sleep(1)
    assert entry["status"]["status_str"] == "success"
    # leave no cached node outputs behind: test_toy_workflow runs the same graph and follows its sampler's
    # progress (POST /free wakes the idle worker, which resets the executor's caches at once)
    requests.post(comfyui.url + "/free", json={"free_memory": True}, timeout=30).raise_for_status()
    time.sleep(1.0)


def test_a_bad_menu_value_is_refused_when_posted_as_for_v1_nodes(comfyui):
    # ComfyUI 0.3.64 checks the values of V1 combos at POST /prompt, not those of V3 ones: the nodes'
    # validate_inputs does, so a typo in an API workflow is still a 400, not a failure after queueing
    api = read(REPO / "workflows" / "api" / "toy_tmd.json")
    [loader] = [n for n in api.values() if n["class_type"] == "TMDModelLoader"]
    loader["inputs"]["dtype"] = "fp64"
    r = requests.post(comfyui.url + "/prompt", json={"prompt": api, "client_id": "tmd-shipped"}, timeout=60)
    assert r.status_code == 400, r.text
    errors = [e for n in r.json()["node_errors"].values() for e in n["errors"]]
    assert errors and {e["type"] for e in errors} == {"custom_validation_failed"}
    assert all(e["details"].endswith("dtype: 'fp64' not in ['default', 'fp32', 'bf16', 'fp16']") for e in errors)
