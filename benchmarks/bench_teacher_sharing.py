"""What TMDDistill's teacher costs on top of the MODEL it comes from (docs/host.md §13), in ComfyUI's process.

A Wan2.1 of the 1.3B width (1536, 12 heads, ffn 8960, umt5 text) with fewer blocks, random bf16 weights, written
in ComfyUI's layout, loaded as UNETLoader loads it (under inference mode), with a rank-32 LoRA on every
attention projection as LoraLoaderModelOnly applies it. Measured: the process RSS and the teacher's bytes that
share the MODEL's storage, for the pack's teacher (`teacher_from_model`) and for the old way (every weight
cloned, LoRAs ignored), each in a process of its own (RSS of one process, after the MODEL is loaded).

    cd $COMFYUI_PATH && .venv/bin/python REPO/benchmarks/bench_teacher_sharing.py REPO [--blocks 4] [--out JSON]
"""

import argparse
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time

p = argparse.ArgumentParser()
p.add_argument("repo")
p.add_argument("--blocks", type=int, default=4)
p.add_argument("--rank", type=int, default=32, help="LoRA rank; 0: no LoRA")
p.add_argument("--out", default=None)
p.add_argument("--method", choices=("pack", "clone"), default=None, help="one measurement (the script runs both)")
p.add_argument("--folder", default=None, help="the model files (written by the parent run)")
a = p.parse_args()
argv = list(sys.argv)
sys.argv = sys.argv[:1]
sys.path.insert(0, os.getcwd())  # ComfyUI's checkout
from comfy.options import enable_args_parsing  # noqa: E402

enable_args_parsing(False)
from comfy.cli_args import args  # noqa: E402

args.cpu = True
import utils.extra_config  # noqa: E402,F401,I001
import comfy.sd  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

spec = importlib.util.spec_from_file_location("comfyui_tmd", f"{a.repo}/__init__.py", submodule_search_locations=[a.repo])
pack = importlib.util.module_from_spec(spec)
sys.modules["comfyui_tmd"] = pack
spec.loader.exec_module(pack)
from comfyui_tmd.nodes import host  # noqa: E402
from comfyui_tmd.nodes.teacher_model import storage_report, teacher_from_model  # noqa: E402
from comfyui_tmd.tmd_core.layouts import diffusers_to_original_state_dict  # noqa: E402
from comfyui_tmd.tmd_core.loading import teacher_from_state_dict  # noqa: E402

torch.set_num_threads(1)


def rss(field: str = "VmRSS") -> int:
    """The process's resident bytes, after glibc has returned freed heap memory (temporaries of the patch
    computation would otherwise stay resident, free for reuse, and count as growth)."""
    import ctypes

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def write_model(folder: str) -> tuple[str, str]:
    from diffusers import WanTransformer3DModel

    cfg = dict(patch_size=[1, 2, 2], num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
               text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=a.blocks, cross_attn_norm=True, eps=1e-6,
               rope_max_seq_len=1024)
    model = WanTransformer3DModel(**cfg).to(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for prm in model.parameters():
            prm.copy_(torch.randn(prm.shape, generator=g) * (0.02 if prm.ndim > 1 else 0.1))
    sd = {k: v.contiguous() for k, v in diffusers_to_original_state_dict(model.state_dict(), "model.diffusion_model.").items()}
    path = os.path.join(folder, "wan_1p3b_width.safetensors")
    save_file(sd, path)
    lora = {}
    for i in range(a.blocks if a.rank else 0):
        for attn in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                key = f"diffusion_model.blocks.{i}.{attn}.{proj}"
                lora[key + ".lora_down.weight"] = torch.randn(a.rank, 1536, generator=g) / 1536**0.5
                lora[key + ".lora_up.weight"] = 0.01 * torch.randn(1536, a.rank, generator=g)
                lora[key + ".alpha"] = torch.tensor(float(a.rank))
    lora_path = os.path.join(folder, "lora.safetensors")
    save_file(lora, lora_path)
    return path, lora_path


def measure(folder: str, method: str) -> dict:
    path, lora_path = (os.path.join(folder, n) for n in ("wan_1p3b_width.safetensors", "lora.safetensors"))
    out = {}
    with torch.inference_mode():  # what the executor does around UNETLoader and LoraLoaderModelOnly
        base = comfy.sd.load_diffusion_model(path)
        lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
        model = comfy.sd.load_lora_for_models(base, None, lora, 1.0, 0)[0] if a.rank else base  # --rank 0: none
    weights = model.model_state_dict("diffusion_model.")
    out["model_weight_bytes"] = sum(t.nbytes for t in weights.values())
    out["model_dtypes"] = sorted({str(t.dtype) for t in weights.values()})
    out["lora_target_bytes"] = sum(weights[k].nbytes for k in model.patches)
    del weights, lora
    with host.training_mode():
        before, t0 = rss(), time.perf_counter()
        if method == "pack":
            teacher = teacher_from_model(model)
        else:  # the old way: every weight cloned (outside inference mode), the LoRA ignored
            heads = model.model.diffusion_model.num_heads
            teacher = teacher_from_state_dict({k: v.clone() for k, v in model.model_state_dict("diffusion_model.").items()},
                                              config={"num_attention_heads": heads})
        out["seconds"] = round(time.perf_counter() - t0, 3)
        out["rss_growth_bytes"] = rss() - before
        out |= storage_report(teacher, model)
    return out


if a.method:
    print("JSON=" + json.dumps(measure(a.folder, a.method)))
    sys.exit(0)
import subprocess  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    write_model(tmp)
    out = {"blocks": a.blocks, "rank": a.rank}
    for method in ("pack", "clone"):
        p = subprocess.run([sys.executable, *argv, "--method", method, "--folder", tmp], capture_output=True, text=True,
                           check=True)
        r = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("JSON="))[5:])
        for k in ("model_weight_bytes", "model_dtypes", "lora_target_bytes"):
            out[k] = r.pop(k)
        out[method] = r
print(json.dumps(out, indent=1))
if a.out:
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
