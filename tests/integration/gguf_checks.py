"""Run inside ComfyUI's venv (cwd = the ComfyUI checkout): the native TMD path on MODELs loaded by ComfyUI-GGUF's
UnetLoaderGGUF against the same weights loaded unquantized by UNETLoader (comfy.sd.load_diffusion_model).

usage: python gguf_checks.py REPO GGUF_PACK MODELS_DIR TRAINED_TMD LORA STRENGTH
    -> prints JSON=... with the measurements. MODELS_DIR/diffusion_models holds gguf_models.write_gguf_models'
    files and host_models' bf16 teacher.
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
import comfy.model_management  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402
import torch  # noqa: E402

repo, gguf_pack, models, trained_path, lora_path, strength = args_in


def import_pack(name, path):
    """Import a custom-node folder as a package, as ComfyUI does."""
    spec = importlib.util.spec_from_file_location(name, f"{path}/__init__.py", submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


folder_paths.add_model_folder_path("diffusion_models", f"{models}/diffusion_models", is_default=True)
gguf_nodes = import_pack(os.path.basename(gguf_pack), gguf_pack)  # registers the unet_gguf folder too
import_pack("comfyui_tmd", repo)
from comfyui_tmd.nodes.native_gguf import base_float32, is_packed, key_patches  # noqa: E402
from comfyui_tmd.nodes.native_patch import apply_tmd, load_native, native_spec, student_weights  # noqa: E402
from comfyui_tmd.tmd_core import TMDSchedule, make_noise, sample_tmd  # noqa: E402

sys.path.insert(0, f"{repo}/tests/integration")
from gguf_models import GGUF_BF16, GGUF_F16, GGUF_Q8, TEACHER_FP16_NAME  # noqa: E402
from host_models import TEACHER_BF16_NAME  # noqa: E402

UnetLoaderGGUF = gguf_nodes.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]
shape = (1, 16, 2, 4, 6)
g = torch.Generator().manual_seed(3)
x_t = torch.randn(shape, generator=g)
context = torch.zeros(1, 512, 4096)
context[:, :5] = torch.randn(1, 5, 4096, generator=g)
sched, noise = TMDSchedule(outer_steps=2, inner_steps=3), make_noise(shape, seed=5)
lora = comfy.utils.load_torch_file(lora_path, safe_load=True)


def gguf(name):
    return UnetLoaderGGUF().load_unet(name)[0]  # what the UnetLoaderGGUF node runs


def unet(name, **options):
    return comfy.sd.load_diffusion_model(f"{models}/diffusion_models/{name}", model_options=options)


def tmd_sample(model, lora_strength=0.0):
    if lora_strength:
        model = comfy.sd.load_lora_for_models(model, None, lora, lora_strength, 0)[0]  # LoraLoaderModelOnly
    tm = apply_tmd(model, student_weights(trained_path, model))
    return sample_tmd(load_native(tm, native_spec(tm), shape), noise, context, sched), len(tm.patches)


def velocity(model):
    comfy.model_management.load_models_gpu([model])
    return model.model.diffusion_model(x_t, torch.tensor([600.0]), context).float()


def rel(a, b):
    return float((a - b).norm() / b.norm())


out = {}
with torch.inference_mode():
    q8 = gguf(GGUF_Q8)
    wan = q8.model.diffusion_model
    out["q8_model"] = f"{type(q8.model).__name__}/{type(wan).__name__}"
    out["q8_packed"] = sorted({str(p.tensor_type.name) for p in wan.parameters() if is_packed(p)})
    out["q8_packed_count"] = sum(is_packed(p) for p in wan.parameters())
    try:
        q8.get_key_patches("diffusion_model.")
        out["host_get_key_patches"] = "ok"
    except AttributeError as e:  # ComfyUI-GGUF's fake `temp.weight` state-dict entry (native_gguf.py)
        out["host_get_key_patches"] = f"AttributeError: {e}"
    ref16 = unet(TEACHER_FP16_NAME)
    out["same_keys"] = sorted(key_patches(q8, "diffusion_model.")) == sorted(ref16.get_key_patches("diffusion_model."))

    # the dequantized base is what the layer computes with (same ComfyUI-GGUF call), and the fp16 file's value
    # within Q8_0's rounding
    layer = wan.blocks[1].ffn[0]
    base = base_float32(q8, "diffusion_model.blocks.1.ffn.0.weight", layer.weight, lambda a, **k: a)
    out["dequant_vs_layer_max_abs"] = float((base - layer.get_weight(layer.weight, torch.float32)).abs().max())
    w16 = ref16.model.diffusion_model.blocks[1].ffn[0].weight.float()
    out["dequant_vs_fp16_rel"] = rel(base, w16)

    # the teacher itself: Q8_0 is a real quantisation of the fp16 file, F16 is the fp16 file
    v16 = velocity(ref16)
    out["teacher_q8_vs_fp16_rel"] = rel(velocity(q8), v16)
    out["teacher_f16_vs_fp16_rel"] = rel(velocity(gguf(GGUF_F16)), v16)

    # TMD on each GGUF vs the same weights unquantized (UNETLoader; on a --cpu host it keeps them in fp32)
    ref, out["fp16_patches"] = tmd_sample(ref16)
    ref_half, _ = tmd_sample(unet(TEACHER_FP16_NAME, dtype=torch.float16))  # fp16 storage, as on a GPU
    ref_bf16, _ = tmd_sample(unet(TEACHER_BF16_NAME))
    samples = {}
    for key, name in (("q8", GGUF_Q8), ("f16", GGUF_F16), ("bf16", GGUF_BF16)):
        samples[key], out[f"{key}_patches"] = tmd_sample(gguf(name))
        out[f"{key}_finite"] = bool(torch.isfinite(samples[key]).all())
    out["q8_vs_fp16_rel"] = rel(samples["q8"], ref)
    out["q8_vs_fp16_max_abs"] = float((samples["q8"] - ref).abs().max())
    out["f16_vs_fp16_rel"] = rel(samples["f16"], ref)
    out["f16_vs_fp16_storage_max_abs"] = float((samples["f16"] - ref_half).abs().max())
    out["bf16_vs_bf16_max_abs"] = float((samples["bf16"] - ref_bf16).abs().max())
    out["sample_scale"] = float(ref.abs().max())

    # LoraLoaderModelOnly on the GGUF MODEL, then TMD: vs the same on the fp16 file
    s = float(strength)
    lora_q8, _ = tmd_sample(gguf(GGUF_Q8), s)
    lora_ref, _ = tmd_sample(ref16, s)
    out["lora_q8_vs_fp16_rel"] = rel(lora_q8, lora_ref)
    out["lora_q8_effect_max_abs"] = float((lora_q8 - samples["q8"]).abs().max())
    out["lora_q8_finite"] = bool(torch.isfinite(lora_q8).all())
print("JSON=" + json.dumps(out))
