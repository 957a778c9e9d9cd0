"""GGUF files of the tiny Wan2.1 stand-in (host_models.tiny_wan), as city96's ComfyUI-GGUF makes and reads them.

ComfyUI-GGUF's `UnetLoaderGGUF` reads a `.gguf` from `diffusion_models/` (its loader.py, `gguf_sd_loader`):
`general.architecture` must be one of its image architectures (here "wan"), tensor names are the original Wan
keys (`blocks.0.self_attn.q.weight`, `head.modulation`; a `model.diffusion_model.` prefix is stripped when
present), and each tensor's shape is its GGUF shape reversed. F32 and F16 tensors become torch views; every other
type (BF16 included) stays packed bytes in a `GGMLTensor` and is dequantized on the fly by its `GGMLOps` layers.

The writer follows ComfyUI-GGUF's own tool chain (tools/README.md) for a Wan2.1 file:
- `tools/convert.py` makes an F16 file from an fp16 or float32 checkpoint, a BF16 file from a bf16 one; from a
  float32/bf16 source it keeps 1-D tensors, tensors of at most 1,024 values and the `.modulation` tables
  (`ModelWan.keys_hiprec`) in F32, from an fp16 source every tensor is F16;
- `tools/fix_5d_tensors.py` adds the 5-D `patch_embedding.weight`, which the quantizer cannot take, back in F32;
- `tools/lcpp.patch` (llama-quantize, e.g. Q8_0 from the F16 file) quantizes the 2-D weights except `modulation`,
  `patch_embedding`, `text_embedding`, `time_projection`, `time_embedding`, `img_emb` and `head`, which keep
  the F16 file's type. So in a Q8_0 Wan file only the attention and FFN weights of the blocks are Q8_0.

The test files (`write_gguf_models`): the tiny teacher as an fp16 ComfyUI-layout file (the "unquantized" side of
every comparison), its F16 and Q8_0 GGUFs, and the BF16 GGUF of host_models' bf16 teacher file.
It runs in ComfyUI's venv (`gguf` is ComfyUI-GGUF's requirement, not this pack's), like the VAE writer.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

GGUF_PACK_NAMES = ("comfyui-gguf",)  # the pack's folder in custom_nodes (git clone: ComfyUI-GGUF; registry: comfyui-gguf)
TEACHER_FP16_NAME = "wan21_tiny_teacher_fp16.safetensors"
GGUF_F16, GGUF_Q8, GGUF_BF16 = (f"wan21_tiny_teacher-{k}.gguf" for k in ("F16", "Q8_0", "BF16"))


def gguf_pack(comfy_path: Path) -> Path | None:
    """ComfyUI-GGUF's folder in the checkout's custom_nodes, or None."""
    nodes = Path(comfy_path) / "custom_nodes"
    if not nodes.is_dir():
        return None
    for p in sorted(nodes.iterdir()):
        if p.name.lower() in GGUF_PACK_NAMES and (p / "loader.py").is_file() and (p / "ops.py").is_file():
            return p
    return None


def gguf_missing(comfy_path) -> str | None:
    """Why the GGUF tests cannot run on this ComfyUI (a skip reason), or None."""
    if not comfy_path:
        return "COMFYUI_PATH is not set"
    comfy_path = Path(comfy_path)
    if gguf_pack(comfy_path) is None:
        return (f"ComfyUI-GGUF is not installed in {comfy_path}/custom_nodes (docs/host.md §15: "
                "scripts/setup_comfyui.sh --gguf)")
    py = comfy_path / ".venv" / "bin" / "python"
    if subprocess.run([str(py), "-c", "import gguf"], capture_output=True).returncode != 0:
        return f"the gguf package is not installed in {py} (docs/host.md §15)"
    return None


GGUF_WRITER = """
import sys
import gguf
import numpy as np
import torch
from safetensors.torch import load_file

src, dst, quant = sys.argv[1:4]
PREFIX = "model.diffusion_model."
KEEP = ("modulation", "patch_embedding.", "text_embedding.", "time_projection.", "time_embedding.", "img_emb.", "head.")
Q = gguf.GGMLQuantizationType
sd = {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in load_file(src).items()}
dtypes = [v.dtype for v in sd.values()]
main = max(set(dtypes), key=dtypes.count)
base = Q.BF16 if main == torch.bfloat16 else Q.F16  # convert.py: the file type follows the main dtype
ftype = {"none": gguf.LlamaFileType.MOSTLY_BF16 if base == Q.BF16 else gguf.LlamaFileType.MOSTLY_F16,
         "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]
writer = gguf.GGUFWriter(path=None, arch="wan")
writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
writer.add_file_type(ftype)
counts = {}
for key, t in sd.items():
    if t.ndim > 4:
        qtype = Q.F32  # fix_5d_tensors.py adds the 5-D patch embedding back in F32
    elif t.dtype in (torch.float32, torch.bfloat16) and (t.ndim == 1 or t.numel() <= 1024 or ".modulation" in key):
        qtype = Q.F32  # convert.py: 1-D, small and keys_hiprec tensors of a float32/bf16 source
    else:
        qtype = base
    # the values as the F16/BF16 file holds them (llama-quantize reads that file)
    data = t.to(torch.float16 if qtype == Q.F16 else torch.bfloat16 if qtype == Q.BF16 else t.dtype).float().numpy()
    if quant != "none" and qtype != Q.F32 and t.ndim >= 2 and not any(k in key for k in KEEP):
        qtype = Q[quant]  # lcpp.patch: quantize the blocks' 2-D weights only
    raw = data.astype(np.float16) if qtype == Q.F16 else data if qtype == Q.F32 else gguf.quants.quantize(data, qtype)
    writer.add_tensor(key, raw, raw_dtype=qtype)
    counts[qtype.name] = counts.get(qtype.name, 0) + 1
writer.write_header_to_file(path=dst)
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
print(counts)
"""


def write_wan_gguf(source: Path, path: Path, quant: str, comfy_path: Path) -> Path:
    """`path`: the ComfyUI-layout Wan file `source` as ComfyUI-GGUF's tools make it (module docstring): F16 from
    an fp16/fp32 source, BF16 from a bf16 one (`quant` "none"), or that file quantized (`quant` "Q8_0"),
    written with ComfyUI's venv."""
    if quant not in ("none", "Q8_0"):
        raise ValueError(f"quant must be 'none' or 'Q8_0', got {quant!r}")
    py = Path(comfy_path) / ".venv" / "bin" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([str(py), "-c", textwrap.dedent(GGUF_WRITER), str(source), str(path), quant],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    if p.returncode != 0:
        raise RuntimeError(f"could not write {path.name}:\n{p.stderr[-3000:]}")
    return path


def write_gguf_models(models: Path, comfy_path: Path) -> dict[str, Path]:
    """models/diffusion_models/: TEACHER_FP16_NAME, GGUF_F16 and GGUF_Q8 from it, GGUF_BF16 from host_models'
    bf16 teacher (written by write_native_models, which must have run)."""
    import torch
    from helpers_wan import save_original_layout
    from host_models import TEACHER_BF16_NAME, tiny_wan

    folder = models / "diffusion_models"
    fp16 = save_original_layout(tiny_wan(), folder / TEACHER_FP16_NAME, prefix="model.diffusion_model.",
                                dtype=torch.float16)
    return {"fp16": fp16,
            "f16": write_wan_gguf(fp16, folder / GGUF_F16, "none", comfy_path),
            "q8": write_wan_gguf(fp16, folder / GGUF_Q8, "Q8_0", comfy_path),
            "bf16": write_wan_gguf(folder / TEACHER_BF16_NAME, folder / GGUF_BF16, "none", comfy_path)}
