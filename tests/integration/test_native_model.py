"""TMD on a native Wan2.1 MODEL (TMDApplyToModel) on the real ComfyUI, with the tiny stand-in models.

- In ComfyUI's venv (native_checks.py): the decoupling invariant against ComfyUI's own WanModel forward, and
  backbone, head and a whole sample against the library's diffusers TMDModel (fp32).
- Through /prompt, the bundled native workflow (workflows/api/wan21_t2v_1.3b_tmd_native.json: UNETLoader ->
  LoraLoaderModelOnly -> TMDApplyToModel -> TMDSampler -> VAEDecode -> video) against the bundled
  TMDModelLoader workflow: same latent without a LoRA, the style LoRA equals merging it into the student by
  hand, and an fp8_e4m3fn MODEL stays within a measured tolerance of bf16.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from comfy_host import REPO
from host_models import (
    LORA_NAME,
    LORA_STRENGTH,
    MERGED_NAME,
    TEACHER_BF16_NAME,
    TEACHER_NAME,
    TRAINED_NAME,
    write_native_models,
    write_wan_models,
)
from safetensors.torch import load_file
from test_wan_workflow import node_id, tiny_prompt

from tmd_core.comfy_client import ComfyClient, output_files

NATIVE = REPO / "workflows" / "api" / "wan21_t2v_1.3b_tmd_native.json"
TEXT = "a red square moving left"
FP8_REL_TOL = 0.08  # ‖fp8 − bf16‖ / ‖bf16‖ of the sample: measured 0.051 (2026-12-02, docs/host.md §12)


@pytest.fixture(scope="module")
def native_models(comfyui, wan_models):
    return write_native_models(comfyui.models_dir)


def native_prompt(models, unet=TEACHER_NAME, weight_dtype="default", lora_strength=0.0, tmd=TRAINED_NAME,
                  seed=11, prefix="tmd_native/latent"):
    """The bundled native workflow on the tiny models, conditioning from TMDTestConditioning, plus a SaveLatent."""
    prompt = json.loads(NATIVE.read_text(encoding="utf-8"))
    pos = node_id(prompt, "CLIPTextEncode")
    del prompt[prompt[pos]["inputs"]["clip"][0]]
    prompt[pos] = {"class_type": "TMDTestConditioning", "inputs": {"text": TEXT, "tokens": 512, "width": 4096},
                   "_meta": prompt[pos]["_meta"]}  # fmt: skip
    settings = {
        "UNETLoader": {"unet_name": unet, "weight_dtype": weight_dtype},
        "LoraLoaderModelOnly": {"lora_name": LORA_NAME, "strength_model": lora_strength},
        "TMDApplyToModel": {"tmd_name": tmd},
        "VAELoader": {"vae_name": models.vae},
        "EmptyHunyuanLatentVideo": {"width": 32, "height": 48, "length": 5},
        "TMDSchedule": {"outer_steps": 2, "inner_steps": 2},
        "TMDSampler": {"seed": seed},
        "SaveVideo": {"filename_prefix": prefix.replace("latent", "video")},
    }
    for class_type, inputs in settings.items():
        prompt[node_id(prompt, class_type)]["inputs"].update(inputs)
    return prompt


def library_prompt(models, tmd, seed=11, prefix="tmd_native/lib"):
    prompt = tiny_prompt(models, TEXT, seed=seed, width=32, height=48, length=5)
    prompt[node_id(prompt, "TMDModelLoader")]["inputs"]["ckpt_name"] = tmd
    prompt[node_id(prompt, "SaveVideo")]["inputs"]["filename_prefix"] = prefix + "_video"
    return prompt


def run_latent(comfyui, prompt, prefix):
    prompt["100"] = {"class_type": "SaveLatent",
                     "inputs": {"samples": [node_id(prompt, "TMDSampler"), 0], "filename_prefix": prefix}}
    entry = ComfyClient(comfyui.url).run(prompt, timeout=600)
    files = {f["node"]: f for f in output_files(entry)}
    video = files[node_id(prompt, "SaveVideo")]
    assert video["filename"].endswith(".mp4")
    f = files["100"]
    return load_file(str(comfyui.output_dir / f["subfolder"] / f["filename"]))["latent_tensor"]


def test_native_adapter_in_comfyui_process(tmp_path):
    """Invariant, native == diffusers, LoRA == merged by hand, fp8 vs bf16: in ComfyUI's venv, no server."""
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        pytest.skip("COMFYUI_PATH is not set")
    py = Path(comfy_path) / ".venv" / "bin" / "python"
    models = tmp_path / "models"
    for folder in ("tmd", "diffusion_models", "loras"):
        (models / folder).mkdir(parents=True)
    base, files = write_wan_models(models), write_native_models(models)
    p = subprocess.run([str(py), str(REPO / "tests" / "integration" / "native_checks.py"), str(REPO),
                        str(base["teacher"]), str(base["tmd"]), str(files["trained"]), str(files["teacher_bf16"]),
                        str(files["lora"]), str(LORA_STRENGTH), str(files["merged"])],
                       cwd=comfy_path, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("JSON="))[5:])
    print(r)
    assert r["fresh_patched_weights"] == 0 and r["trained_patched_weights"] > 0
    assert r["invariant_max_abs"] <= 1e-5 * max(1.0, r["invariant_velocity_scale"])
    assert r["backbone_max_abs"] <= 1e-4 and r["head_max_abs"] <= 1e-4 and r["sample_max_abs"] <= 1e-4
    assert r["lora_effect_max_abs"] > 0.05 and r["lora_vs_merged_max_abs"] <= 1e-4
    assert 0 < r["fp8_vs_bf16_rel_l2"] <= FP8_REL_TOL


def test_native_workflow_gives_the_library_latent(comfyui, wan_models, native_models):
    native = run_latent(comfyui, native_prompt(wan_models), "tmd_native/plain")
    library = run_latent(comfyui, library_prompt(wan_models, TRAINED_NAME), "tmd_native/lib")
    assert native.shape == (1, 16, 2, 6, 4)
    torch.testing.assert_close(native, library, rtol=0, atol=1e-4)


def test_style_lora_on_the_model_equals_merging_it_into_the_student(comfyui, wan_models, native_models):
    stacked = run_latent(comfyui, native_prompt(wan_models, lora_strength=LORA_STRENGTH), "tmd_native/lora")
    merged = run_latent(comfyui, library_prompt(wan_models, MERGED_NAME), "tmd_native/merged")
    plain = run_latent(comfyui, library_prompt(wan_models, TRAINED_NAME), "tmd_native/lib2")
    assert float((merged - plain).abs().max()) > 0.05  # the LoRA matters
    torch.testing.assert_close(stacked, merged, rtol=0, atol=1e-4)


def test_fp8_model_runs_within_the_stated_tolerance_of_bf16(comfyui, wan_models, native_models):
    kw = {"unet": TEACHER_BF16_NAME, "lora_strength": LORA_STRENGTH}
    bf16 = run_latent(comfyui, native_prompt(wan_models, weight_dtype="default", **kw), "tmd_native/bf16")
    fp8 = run_latent(comfyui, native_prompt(wan_models, weight_dtype="fp8_e4m3fn", **kw), "tmd_native/fp8")
    rel = float((fp8 - bf16).norm() / bf16.norm())
    print({"fp8_vs_bf16_rel_l2": rel, "max_abs": float((fp8 - bf16).abs().max())})
    assert torch.isfinite(fp8).all() and 0 < rel <= FP8_REL_TOL
