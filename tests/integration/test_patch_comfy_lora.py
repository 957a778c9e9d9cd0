"""A TMD patch is a LoRA ComfyUI's own loader reads (docs/patches.md §2): with comfy.lora in ComfyUI's Python, every
tensor outside tmd.* is taken, and the merged weights equal apply_patch's, and the host-free tests' comfy.lora
stand-in's exactly. Needs COMFYUI_PATH (its .venv)."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers_wan import make_tiny_teacher, moved_student
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tmd_core.layouts import diffusers_to_original_state_dict
from tmd_core.patch import apply_patch, extract_patch_from_models
from tmd_core.patch_file import save_patch


def comfy_python() -> list[str]:
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        pytest.skip("COMFYUI_PATH is not set: this test runs ComfyUI's own LoRA code (see scripts/setup_comfyui.sh)")
    py = Path(path) / ".venv" / "bin" / "python"
    return [str(py if py.exists() else sys.executable)]


def test_comfyui_lora_loader_takes_every_lora_key_and_merges_like_apply_patch(tmp_path):
    cmd = comfy_python()
    teacher = make_tiny_teacher(0)
    student = moved_student(teacher)
    patch = extract_patch_from_models(student, teacher, 8, dtype=torch.float32)
    path = save_patch(patch, tmp_path / "p.safetensors")
    base = tmp_path / "base.safetensors"
    save_file(diffusers_to_original_state_dict(teacher.state_dict()), str(base))
    out = tmp_path / "merged.safetensors"
    env = {**os.environ, "PYTHONPATH": os.environ.get("COMFYUI_PATH", "")}
    proc = subprocess.run([*cmd, str(Path(__file__).with_name("comfy_lora_merge.py")), str(path), str(base), str(out)],
                          capture_output=True, text=True, env=env, cwd=os.environ.get("COMFYUI_PATH"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with safe_open(str(out), "pt") as f:
        report = json.loads(f.metadata()["report"])
        merged = {k: f.get_tensor(k) for k in f.keys()}
    assert all(k.startswith("tmd.") for k in report["not_loaded"]), report["not_loaded"][:5]
    assert report["patched"] == len(patch.lora) + len(patch.full)
    ours = diffusers_to_original_state_dict(apply_patch(copy.deepcopy(teacher), patch).transformer.state_dict())
    assert max((merged[k] - ours[k].float()).abs().max().item() for k in merged) <= 1e-6
    # the host-free tests' stand-in (tests/nodes/host_fakes/comfy/lora.py) takes the same keys and merges the same
    fake = stand_in_lora()
    sd = {"diffusion_model." + k: v for k, v in load_file(str(base)).items()}
    model = SimpleNamespace(state_dict=lambda: sd, model_config=SimpleNamespace(unet_config={}))
    patches = fake.load_lora(load_file(str(path)), fake.model_lora_keys_unet(model, {}), log_missing=False)
    assert {k.removeprefix("diffusion_model.") for k in patches} == set(merged)
    for k, v in patches.items():
        w = fake.calculate_weight([(1.0, v, 1.0, None, None)], sd[k].clone().float(), k)
        assert torch.equal(w, merged[k.removeprefix("diffusion_model.")]), k


def stand_in_lora():
    """The comfy.lora stand-in of tests/nodes, loaded on its own (it needs torch only)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "nodes" / "host_fakes" / "comfy" / "lora.py"
    spec = importlib.util.spec_from_file_location("tmd_stand_in_comfy_lora", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
