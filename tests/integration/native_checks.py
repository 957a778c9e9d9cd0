"""Run inside ComfyUI's venv (cwd = the ComfyUI checkout): the native adapter against ComfyUI's own WanModel
forward and against the library's diffusers TMDModel, on MODELs loaded the way UNETLoader loads them.

usage: python native_checks.py REPO TEACHER FRESH_TMD TRAINED_TMD TEACHER_BF16 LORA STRENGTH MERGED_TMD
    -> prints JSON=... with the max errors. MODELs load with comfy.sd.load_diffusion_model (what UNETLoader
    calls, fp8 via its model_options) and LoRAs with comfy.sd.load_lora_for_models (what LoraLoaderModelOnly calls).
"""

import importlib.util
import json
import os
import sys

sys.argv, args_in = sys.argv[:1], sys.argv[1:]
sys.path.insert(0, os.getcwd())  # ComfyUI's checkout: comfy/, utils/
from comfy.options import enable_args_parsing  # noqa: E402

enable_args_parsing(False)
from comfy.cli_args import args  # noqa: E402

args.cpu = True
import utils.extra_config  # noqa: E402,F401,I001  (as main.py does first)
import comfy.sd  # noqa: E402
import torch  # noqa: E402

repo, teacher_path, fresh_path, trained_path, bf16_path, lora_path, strength, merged_path = args_in
spec = importlib.util.spec_from_file_location("comfyui_tmd", f"{repo}/__init__.py",
                                              submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec)
sys.modules["comfyui_tmd"] = pack
spec.loader.exec_module(pack)  # as ComfyUI imports a pack folder
from comfyui_tmd.nodes.native_patch import apply_tmd, load_native, native_spec, student_weights  # noqa: E402
from comfyui_tmd.tmd_core import TMDSchedule, load_tmd, make_noise, sample_tmd  # noqa: E402

torch.manual_seed(0)
out = {}
shape = (1, 16, 2, 4, 6)
model = comfy.sd.load_diffusion_model(teacher_path)  # what UNETLoader(weight_dtype="default") calls
g = torch.Generator().manual_seed(3)
x_t, y_s = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
context = torch.zeros(1, 512, 4096)
context[:, :5] = torch.randn(1, 5, 4096, generator=g)

with torch.inference_mode():
    # docs/method.md §2.3 on the native path: head(fuse(B(x_t, t), y_s, s = t), s = t, r) == teacher(x_t, t)
    fresh = apply_tmd(model, student_weights(fresh_path, model))
    native = load_native(fresh, native_spec(fresh), shape)
    errs = []
    for t, r in ((0.7, 0.3), (1.0, 0.0), (0.25, 0.25)):
        head = native.head(native.backbone(x_t, t, context), y_s, t, r)
        v = model.model.diffusion_model(x_t, torch.tensor([1000.0 * t]), context).float()  # ComfyUI's forward
        errs.append(float((head - v).abs().max()))
    out["invariant_max_abs"] = max(errs)
    out["invariant_velocity_scale"] = float(v.abs().max())
    out["fresh_patched_weights"] = len(fresh.patches)

    # native vs diffusers for a student that differs from its teacher (fp32)
    trained = apply_tmd(model, student_weights(trained_path, model))
    native = load_native(trained, native_spec(trained), shape)
    lib = load_tmd(trained_path)
    o_n, o_l = native.backbone(x_t, 0.6, context), lib.backbone(x_t, 0.6, context)
    out["backbone_max_abs"] = float((o_n.m.float() - o_l.m.float()).abs().max())
    out["head_max_abs"] = float((native.head(o_n, y_s, 0.6, 0.2) - lib.head(o_l, y_s, 0.6, 0.2)).abs().max())
    sched = TMDSchedule(outer_steps=2, inner_steps=3)
    noise = make_noise(shape, seed=5)
    a, b = sample_tmd(native, noise, context, sched), sample_tmd(lib, noise, context, sched)
    out["sample_max_abs"] = float((a - b).abs().max())
    out["sample_scale"] = float(b.abs().max())
    out["trained_patched_weights"] = len(trained.patches)

    # a style LoRA on the MODEL (strength as LoraLoaderModelOnly) vs the LoRA merged into the student by hand
    import comfy.utils

    lora = comfy.utils.load_torch_file(lora_path, safe_load=True)

    def with_lora(m):
        return comfy.sd.load_lora_for_models(m, None, lora, float(strength), 0)[0]

    def native_sample(m, tmd_path):
        tm = apply_tmd(m, student_weights(tmd_path, m))
        return sample_tmd(load_native(tm, native_spec(tm), shape), noise, context, sched)

    stacked = native_sample(with_lora(model), trained_path)
    merged = sample_tmd(load_tmd(merged_path), noise, context, sched)
    out["lora_vs_merged_max_abs"] = float((stacked - merged).abs().max())
    out["lora_effect_max_abs"] = float((merged - b).abs().max())

    # fp8_e4m3fn weights vs the bf16 file (UNETLoader default; on CPU ComfyUI computes both in fp32)
    ref = native_sample(with_lora(comfy.sd.load_diffusion_model(bf16_path)), trained_path)
    fp8 = native_sample(with_lora(comfy.sd.load_diffusion_model(bf16_path, model_options={"dtype": torch.float8_e4m3fn})),
                        trained_path)
    out["fp8_vs_bf16_rel_l2"] = float((fp8 - ref).norm() / ref.norm())
    out["fp8_vs_bf16_max_abs"] = float((fp8 - ref).abs().max())
    out["bf16_vs_fp32_rel_l2"] = float((ref - stacked).norm() / stacked.norm())
print("JSON=" + json.dumps(out))
