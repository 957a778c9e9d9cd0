"""tests/nodes/host_fakes/ stay faithful: same signatures (names, kinds, defaults; annotations aside) and
Wan2.1 numbers as the real ComfyUI modules, and the V3 schema stand-in (comfy_api.latest) describes the
pack's nodes exactly as the real server's /object_info does."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from comfy_host import REPO

FAKES = Path(__file__).resolve().parents[1] / "nodes"
CHECKED = {  # module -> callables/classes whose signatures nodes rely on
    "server": ["PromptServer.send_progress_text"],
    "folder_paths": ["add_model_folder_path", "get_folder_paths", "get_filename_list", "get_full_path",
                     "get_full_path_or_raise", "get_output_directory", "get_temp_directory", "get_input_directory",
                     "get_save_image_path", "map_legacy"],
    "comfy.utils": ["ProgressBar", "ProgressBar.update", "ProgressBar.update_absolute", "set_progress_bar_global_hook"],
    "comfy.model_management": ["get_torch_device", "intermediate_device", "unet_offload_device", "load_models_gpu",
                               "load_model_gpu", "soft_empty_cache", "throw_exception_if_processing_interrupted",
                               "interrupt_current_processing", "processing_interrupted", "is_device_cpu"],
    "comfy.model_patcher": ["get_key_weight", "ModelPatcher", "ModelPatcher.clone", "ModelPatcher.model_size", "ModelPatcher.is_clone",
                            "ModelPatcher.get_model_object", "ModelPatcher.model_state_dict",
                            "ModelPatcher.get_key_patches"],
    "comfy.lora": ["load_lora", "model_lora_keys_unet", "calculate_weight"],
    "latent_preview": ["prepare_callback"],
    "comfy_api.latest": ["ComfyExtension.get_node_list", "ComfyExtension.on_load"],
    "comfy_api.latest._io": ["Input", "WidgetInput", "Output", "Boolean.Input", "Int.Input", "Float.Input",
                             "String.Input", "Combo.Input", "Custom", "Image.Output", "Latent.Input",
                             "Latent.Output", "Conditioning.Input", "Conditioning.Output", "Sigmas.Input",
                             "Clip.Input", "Model.Input", "Vae.Input", "Schema", "NodeOutput", "HiddenHolder",
                             "HiddenHolder.from_dict", "ComfyNode.define_schema", "ComfyNode.execute",
                             "ComfyNode.INPUT_TYPES", "ComfyNode.GET_NODE_INFO_V1", "ComfyNode.PREPARE_CLASS_CLONE",
                             "ComfyNode.EXECUTE_NORMALIZED", "add_to_dict_v1", "prune_dict"],
}  # fmt: skip
MENUS = {"TMDModelLoader": "ckpt_name", "TMDCheckpointInfo": "ckpt_name", "TMDApplyToModel": "tmd_name",
         "TMDDistill": "teacher_name"}  # menus of model files: the server's folders differ from the stand-in's

DUMP = """
import importlib, inspect, json, sys
sys.argv = sys.argv[:1]
from comfy.options import enable_args_parsing
enable_args_parsing(False)
from comfy.cli_args import args
args.cpu = True
import utils.extra_config  # as main.py does before anything else: `utils` is ComfyUI's utils/ package
checked = json.loads(sys.stdin.read())
out = {}
for mod, names in checked.items():
    m = importlib.import_module(mod)
    for name in names:
        obj = m
        for part in name.split("."):
            obj = getattr(obj, part)
        sig = inspect.signature(obj)
        params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
        out[mod + ":" + name] = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
from comfy.latent_formats import Wan21
f = Wan21()
out["wan21"] = [f.latents_mean.flatten().tolist(), f.latents_std.flatten().tolist(), f.scale_factor]
from comfy_api.latest import io
out["hidden"] = {h.name: h.value for h in io.Hidden}
out["function"] = io.ComfyNode.FUNCTION
print("JSON=" + json.dumps(out))
"""


def signatures(checked: dict) -> dict:
    import importlib

    out = {}
    for mod, names in checked.items():
        m = importlib.import_module(mod)
        for name in names:
            obj = m
            for part in name.split("."):
                obj = getattr(obj, part)
            sig = inspect.signature(obj)
            params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
            out[f"{mod}:{name}"] = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    return out


def test_fakes_match_the_real_modules(comfyui):
    py = comfyui.comfy_path / ".venv" / "bin" / "python"
    if not py.exists():
        pytest.skip(f"no ComfyUI venv at {py}")
    p = subprocess.run([str(py), "-c", DUMP], input=json.dumps(CHECKED), cwd=comfyui.comfy_path,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    real = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("JSON="))[5:])
    sys.path.insert(0, str(FAKES))
    try:
        import comfy_fakes  # noqa: F401 — installs the stand-ins if tests/nodes was not collected
    finally:
        sys.path.remove(str(FAKES))
    fake = signatures(CHECKED)
    mismatched = {k: (fake[k], real[k]) for k in fake if fake[k] != real[k]}
    assert mismatched == {}, "stand-in signatures differ from ComfyUI's (fake, real): " + json.dumps(
        mismatched, indent=1
    )
    from comfy.latent_formats import Wan21
    from comfy_api.latest import io

    f = Wan21()
    assert [f.latents_mean.flatten().tolist(), f.latents_std.flatten().tolist(), f.scale_factor] == real[
        "wan21"
    ]
    assert {h.name: h.value for h in io.Hidden} == real["hidden"] and io.ComfyNode.FUNCTION == real["function"]


def comparable(info: dict) -> dict:
    """A node's /object_info entry without what depends on the machine: the model-file menus' entries and
    the module path (custom_nodes.<pack folder> on a server)."""
    info = json.loads(json.dumps(info))
    info.pop("python_module")
    name = MENUS.get(info["name"])
    for group in ("required", "optional"):
        if name in info["input"].get(group, {}):
            info["input"][group][name][1].pop("options")
    return info


def test_stand_in_schema_describes_the_pack_nodes_as_the_real_server_does(comfyui, tmp_path):
    import asyncio

    import requests

    sys.path.insert(0, str(FAKES))
    try:
        from comfy_fakes import MODULES, load_module
    finally:
        sys.path.remove(str(FAKES))
    MODULES["folder_paths"]._reset(tmp_path / "comfyui")
    pack = sys.modules.get("comfyui_tmd") or load_module("comfyui_tmd", REPO / "__init__.py", package=True)
    sys.modules["comfyui_tmd.nodes"].host.register_model_folder()
    classes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    fake = {cls.GET_SCHEMA().node_id: comparable(cls.GET_NODE_INFO_V1()) for cls in classes}
    served = requests.get(comfyui.url + "/object_info", timeout=60).json()
    real = {k: comparable(served[k]) for k in fake}
    assert set(MENUS) <= set(fake)
    for node_id in fake:
        assert fake[node_id] == real[node_id], node_id
