"""TMD on a MODEL from city96's ComfyUI-GGUF (UnetLoaderGGUF), on the real ComfyUI, with the tiny stand-in models.

Skipped unless COMFYUI_PATH is set and ComfyUI-GGUF (custom_nodes/ComfyUI-GGUF) and its `gguf` package are installed
there (docs/host.md §15: `scripts/setup_comfyui.sh --gguf`). The GGUF files are written as ComfyUI-GGUF's tools
write a Wan2.1 file (gguf_models.py): F16 and Q8_0 from the fp16 teacher file, BF16 from the bf16 one.

- In ComfyUI's venv (gguf_checks.py): the loader's MODEL, the dequantized base, the teacher itself, TMD on each
  GGUF against the same weights unquantized, and a LoRA on the GGUF MODEL.
- Through /prompt: UnetLoaderGGUF -> LoraLoaderModelOnly -> TMDApplyToModel -> TMDSampler (the bundled native
  workflow with its loader swapped) against the same graph with UNETLoader on the fp16 file.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests
import torch
from comfy_host import REPO
from gguf_models import GGUF_F16, GGUF_Q8, TEACHER_FP16_NAME, gguf_missing, gguf_pack, write_gguf_models
from host_models import LORA_STRENGTH, PATCH_FULL_NAME, write_native_models, write_patch_models
from test_native_model import native_prompt, run_latent
from test_wan_workflow import node_id

# bounds on ‖GGUF − unquantized‖ / ‖unquantized‖ of a TMD sample; measured 2026-12-03 (docs/host.md §15)
Q8_REL_TOL = 1e-3  # Q8_0 GGUF vs the fp16 file: measured 2.5e-4 in-process, 2.3e-4 through /prompt (2.1e-4 with LoRA)
F16_REL_TOL = 1e-3  # F16 GGUF vs the fp16 file: measured 2.9e-4 / 2.8e-4 (fp16 rounding of the patched F16 weights)
Q8_TEACHER_MIN = 1e-3  # the Q8_0 teacher itself differs from the fp16 file by more: measured 4.8e-3
# a TMD patch adds the student's change to the quantized weights, so Q8_0's rounding stays in the sample (unlike a
# full student, whose diff is taken against the dequantized GGUF): bounded by the teacher's own Q8_0 error scale
Q8_PATCH_REL_TOL = 1e-2  # measured 3.3e-3 (the full student on the same GGUF: 2.5e-4)

pytestmark = pytest.mark.skipif(gguf_missing(os.environ.get("COMFYUI_PATH")) is not None,
                                reason=str(gguf_missing(os.environ.get("COMFYUI_PATH"))))


@pytest.fixture(scope="module")
def gguf_files(comfyui, wan_models):
    if requests.get(f"{comfyui.url}/object_info/UnetLoaderGGUF", timeout=30).json() == {}:
        pytest.fail(f"the server did not load ComfyUI-GGUF (see {comfyui.log})")
    write_native_models(comfyui.models_dir)
    return write_gguf_models(comfyui.models_dir, comfyui.comfy_path)


def gguf_prompt(models, unet, **kw):
    """native_prompt (bundled native workflow) with UNETLoader replaced by UnetLoaderGGUF(unet)."""
    prompt = native_prompt(models, unet=TEACHER_FP16_NAME, **kw)
    loader = node_id(prompt, "UNETLoader")
    prompt[loader] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": unet},
                      "_meta": {"title": "Unet Loader (GGUF)"}}
    return prompt


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_gguf_models_in_comfyui_process(tmp_path):
    """Loader, dequantized base, teacher, TMD on Q8_0 / F16 / BF16 GGUF vs unquantized, LoRA: in ComfyUI's venv."""
    comfy_path = Path(os.environ["COMFYUI_PATH"])
    models = tmp_path / "models"
    for folder in ("tmd", "diffusion_models", "loras"):
        (models / folder).mkdir(parents=True)
    files = write_native_models(models)
    write_gguf_models(models, comfy_path)
    p = subprocess.run([str(comfy_path / ".venv" / "bin" / "python"), str(REPO / "tests" / "integration" / "gguf_checks.py"),
                        str(REPO), str(gguf_pack(comfy_path)), str(models), str(files["trained"]), str(files["lora"]),
                        str(LORA_STRENGTH)], cwd=comfy_path, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("JSON="))[5:])
    print(r)
    assert r["q8_model"] == "WAN21/WanModel" and r["q8_packed"] == ["Q8_0"] and r["q8_packed_count"] == 40
    assert r["same_keys"]  # key_patches of the GGUF MODEL name what get_key_patches of the fp16 MODEL names
    assert r["dequant_vs_layer_max_abs"] == 0.0 and 0 < r["dequant_vs_fp16_rel"] < 0.02
    assert r["teacher_f16_vs_fp16_rel"] == 0.0 and r["teacher_q8_vs_fp16_rel"] > Q8_TEACHER_MIN
    assert all(r[f"{k}_finite"] for k in ("q8", "f16", "bf16", "lora_q8"))
    assert r["q8_patches"] == r["f16_patches"] == r["bf16_patches"] == r["fp16_patches"] > 0
    assert r["q8_vs_fp16_rel"] <= Q8_REL_TOL and r["f16_vs_fp16_rel"] <= F16_REL_TOL
    assert r["bf16_vs_bf16_max_abs"] <= 1e-5 and r["f16_vs_fp16_storage_max_abs"] <= 1e-3
    assert r["lora_q8_effect_max_abs"] > 0.05 and r["lora_q8_vs_fp16_rel"] <= Q8_REL_TOL


def test_q8_gguf_model_runs_tmd_within_the_stated_tolerance(comfyui, wan_models, gguf_files):
    q8 = run_latent(comfyui, gguf_prompt(wan_models, GGUF_Q8), "tmd_gguf/q8")
    ref = run_latent(comfyui, native_prompt(wan_models, unet=TEACHER_FP16_NAME), "tmd_gguf/fp16")
    print({"q8_vs_fp16_rel": rel(q8, ref), "max_abs": float((q8 - ref).abs().max())})
    assert q8.shape == (1, 16, 2, 6, 4) and torch.isfinite(q8).all()
    assert rel(q8, ref) <= Q8_REL_TOL


def test_f16_gguf_model_matches_the_fp16_file(comfyui, wan_models, gguf_files):
    f16 = run_latent(comfyui, gguf_prompt(wan_models, GGUF_F16), "tmd_gguf/f16")
    ref = run_latent(comfyui, native_prompt(wan_models, unet=TEACHER_FP16_NAME), "tmd_gguf/fp16b")
    print({"f16_vs_fp16_rel": rel(f16, ref)})
    assert torch.isfinite(f16).all() and rel(f16, ref) <= F16_REL_TOL


def test_a_lora_on_the_gguf_model_stacks_with_tmd(comfyui, wan_models, gguf_files):
    kw = {"lora_strength": LORA_STRENGTH}
    stacked = run_latent(comfyui, gguf_prompt(wan_models, GGUF_Q8, **kw), "tmd_gguf/q8_lora")
    plain = run_latent(comfyui, gguf_prompt(wan_models, GGUF_Q8), "tmd_gguf/q8b")
    ref = run_latent(comfyui, native_prompt(wan_models, unet=TEACHER_FP16_NAME, **kw), "tmd_gguf/fp16_lora")
    print({"lora_q8_vs_fp16_rel": rel(stacked, ref), "lora_effect": float((stacked - plain).abs().max())})
    assert float((stacked - plain).abs().max()) > 0.05  # the LoRA matters
    assert torch.isfinite(stacked).all() and rel(stacked, ref) <= Q8_REL_TOL


def test_a_tmd_patch_on_the_gguf_model_runs_within_the_quantization_error(comfyui, wan_models, gguf_files):
    """A patch (LoRA factors + differences, docs/patches.md) on a Q8_0 GGUF MODEL: ComfyUI-GGUF applies the LoRA
    patches to its dequantized weights; the sample stays within Q8_0's own error of the patch on the fp16 file."""
    write_patch_models(comfyui.models_dir)
    q8 = run_latent(comfyui, gguf_prompt(wan_models, GGUF_Q8, tmd=PATCH_FULL_NAME), "tmd_gguf/q8_patch")
    ref = run_latent(comfyui, native_prompt(wan_models, unet=TEACHER_FP16_NAME, tmd=PATCH_FULL_NAME),
                     "tmd_gguf/fp16_patch")
    student = run_latent(comfyui, gguf_prompt(wan_models, GGUF_Q8), "tmd_gguf/q8_student")
    print({"q8_patch_vs_fp16_patch_rel": rel(q8, ref), "q8_patch_vs_q8_student_rel": rel(q8, student)})
    assert torch.isfinite(q8).all() and rel(q8, ref) <= Q8_PATCH_REL_TOL
