"""TMD patches on a native Wan2.1 MODEL (TMDApplyToModel with a patch file) on the real ComfyUI, through /prompt
with the bundled native workflow (test_native_model.py's `native_prompt`) and the tiny stand-in models:

- a full-rank patch gives the full student's latent, through TMDApplyToModel and through TMDModelLoader (the
  library's diffusers path), fp32;
- a rank-8 patch gives the library's merge of that patch, and differs from the student by a measured amount;
- a style LoRA on the MODEL (LoraLoaderModelOnly) + the patch = the LoRA merged into the teacher by hand + the patch;
- on an fp8_e4m3fn MODEL it stays within the student's fp8 tolerance of bf16;
- a patch made for another architecture is refused naming both.
"""

import pytest
import torch
from host_models import (
    LORA_STRENGTH,
    PATCH_FULL_NAME,
    PATCH_LOW_AS_STUDENT,
    PATCH_LOW_NAME,
    PATCH_LOW_STYLE,
    PATCH_OTHER_NAME,
    TEACHER_BF16_NAME,
    TRAINED_NAME,
    write_native_models,
    write_patch_models,
)
from test_native_model import FP8_REL_TOL, library_prompt, native_prompt, run_latent

from tmd_core.comfy_client import ComfyRunError

# ‖rank-8 patch − student‖ / ‖student‖ of the 2×2 sample: measured 0.127 (2026-12-03, docs/host.md §12). The stand-in
# student's changes are random noise, full rank: rank 8 leaves 0.905 of ‖ΔW‖ (a trained student's are far more
# compressible, docs/patches.md §5), so the bound says "clearly moved, same sample", not "close".
LOW_RANK_REL = (0.06, 0.2)


def rel_l2(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def patch_models(comfyui, wan_models):
    write_native_models(comfyui.models_dir)
    return write_patch_models(comfyui.models_dir)


@pytest.fixture(scope="module")
def student_latents(comfyui, wan_models, patch_models):
    """The full student's latent through TMDApplyToModel and through TMDModelLoader (no LoRA, default dtype)."""
    return {"native": run_latent(comfyui, native_prompt(wan_models, tmd=TRAINED_NAME), "tmd_patch/student"),
            "library": run_latent(comfyui, library_prompt(wan_models, TRAINED_NAME), "tmd_patch/library")}


def test_a_full_rank_patch_gives_the_full_students_latent(comfyui, wan_models, patch_models, student_latents):
    patch = run_latent(comfyui, native_prompt(wan_models, tmd=PATCH_FULL_NAME), "tmd_patch/full")
    print({"stored_factor_error": patch_models["errors"]["full"]["relative"],
           "patch_vs_native_student_max_abs": float((patch - student_latents["native"]).abs().max()),
           "patch_vs_library_max_abs": float((patch - student_latents["library"]).abs().max())})
    assert patch.shape == (1, 16, 2, 6, 4)
    torch.testing.assert_close(patch, student_latents["native"], rtol=0, atol=1e-4)
    torch.testing.assert_close(patch, student_latents["library"], rtol=0, atol=1e-4)


def test_a_low_rank_patch_gives_its_library_merge_and_differs_from_the_student(comfyui, wan_models, patch_models,
                                                                              student_latents):
    patch = run_latent(comfyui, native_prompt(wan_models, tmd=PATCH_LOW_NAME), "tmd_patch/low")
    merged = run_latent(comfyui, library_prompt(wan_models, PATCH_LOW_AS_STUDENT), "tmd_patch/low_lib")
    rel = rel_l2(patch, student_latents["library"])
    print({"stored_factor_error": patch_models["errors"]["low"]["relative"], "low_vs_student_rel_l2": rel,
           "low_vs_student_max_abs": float((patch - student_latents["library"]).abs().max()),
           "low_vs_library_merge_max_abs": float((patch - merged).abs().max())})
    torch.testing.assert_close(patch, merged, rtol=0, atol=1e-4)
    assert LOW_RANK_REL[0] <= rel <= LOW_RANK_REL[1]


def test_style_lora_on_the_model_plus_a_patch_equals_merging_the_lora_by_hand(comfyui, wan_models, patch_models):
    stacked = run_latent(comfyui, native_prompt(wan_models, lora_strength=LORA_STRENGTH, tmd=PATCH_LOW_NAME),
                         "tmd_patch/lora")
    merged = run_latent(comfyui, library_prompt(wan_models, PATCH_LOW_STYLE), "tmd_patch/lora_merged")
    plain = run_latent(comfyui, library_prompt(wan_models, PATCH_LOW_AS_STUDENT), "tmd_patch/low_lib2")
    print({"lora_effect_max_abs": float((merged - plain).abs().max()),
           "lora_vs_merged_max_abs": float((stacked - merged).abs().max())})
    assert float((merged - plain).abs().max()) > 0.05  # the LoRA matters
    torch.testing.assert_close(stacked, merged, rtol=0, atol=1e-4)


def test_a_patch_on_an_fp8_model_stays_within_the_stated_tolerance_of_bf16(comfyui, wan_models, patch_models):
    kw = {"unet": TEACHER_BF16_NAME, "lora_strength": LORA_STRENGTH, "tmd": PATCH_LOW_NAME}
    bf16 = run_latent(comfyui, native_prompt(wan_models, weight_dtype="default", **kw), "tmd_patch/bf16")
    fp8 = run_latent(comfyui, native_prompt(wan_models, weight_dtype="fp8_e4m3fn", **kw), "tmd_patch/fp8")
    rel = rel_l2(fp8, bf16)
    print({"fp8_vs_bf16_rel_l2": rel, "max_abs": float((fp8 - bf16).abs().max())})
    assert torch.isfinite(fp8).all() and 0 < rel <= FP8_REL_TOL


def test_a_patch_for_another_architecture_is_refused_naming_both(comfyui, wan_models, patch_models):
    with pytest.raises(ComfyRunError) as e:
        run_latent(comfyui, native_prompt(wan_models, tmd=PATCH_OTHER_NAME), "tmd_patch/other")
    message = str(e.value)
    print(message)
    assert "TMDApplyToModel" in message
    assert (f"{PATCH_OTHER_NAME} was made for a Wan2.1 of width 256 x 6 blocks (ffn 512, text 4096), the MODEL is "
            "width 128 x 4 blocks (ffn 256, text 4096)") in message
