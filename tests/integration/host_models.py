"""What the real host needs to run the bundled Wan workflows on CPU: tiny model files and a test-only node.

- A tiny Wan2.1 t2v DiT that ComfyUI itself can detect (heads 128 wide, Wan's freq_dim 256, umt5 width
  4096, 16 latent channels): saved as a TMD student (models/tmd) and as a plain teacher in ComfyUI's
  layout (models/diffusion_models).
- A Wan2.1 VAE. ComfyUI's VAELoader detects it by the key `decoder.middle.0.residual.0.gamma` (and the
  absence of Wan2.2's `decoder.upsamples.0.upsamples.0.residual.2.weight`) and then builds a fixed
  architecture, `WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], ...)` (comfy/sd.py): the width does
  not come from the file, so a narrow Wan VAE cannot be loaded (its tensors would not fit). The file
  is therefore the real architecture with seeded random weights, decoder only (73 M of the 127 M
  parameters, 147 MB in bf16): VAEDecode never runs the encoder, which ComfyUI reports as missing keys.
  The key names and shapes are read from ComfyUI's own WanVAE in its venv.
- `TMDTestConditioning`, in a custom-node pack of its own: umt5-xxl (5.7 B) cannot be replaced by a
  small text encoder through CLIPLoader(type wan), so this node stands in for CLIPTextEncode and
  emits a CONDITIONING `[[Tensor[1, tokens, 4096], {"pooled_output": None}]]`, zero-padded like umt5.
"""

from __future__ import annotations

import inspect
import subprocess
import textwrap
from pathlib import Path

TMD_NAME = "wan21_tiny_tmd.safetensors"
TEACHER_NAME = "wan21_tiny_teacher.safetensors"
VAE_NAME = "wan21_vae_random_decoder_bf16.safetensors"
TEST_PACK = "tmd_test_nodes"
MODEL_FOLDERS = ("tmd", "diffusion_models", "vae", "text_encoders", "loras")


def stand_in_conditioning(text: str, tokens: int = 512, width: int = 4096):
    """Tensor[1, tokens, width]: one seeded N(0, 1) row per word of `text` (at least one), zeros after."""
    import hashlib

    import torch

    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    g = torch.Generator().manual_seed(seed)
    n = min(tokens, max(1, len(text.split())))
    cond = torch.zeros(1, tokens, width)
    cond[:, :n] = torch.randn(1, n, width, generator=g)
    return cond


NODE_SOURCE = '''
"""Test-only nodes for the TMD pack's real-host tests (written by tests/integration/host_models.py)."""


class TMDTestConditioning:
    DESCRIPTION = "Test stand-in for CLIPTextEncode with umt5-xxl: a seeded CONDITIONING per text."
    CATEGORY = "TMD/testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text": ("STRING", {"multiline": True, "default": "", "tooltip": "Seeds the embedding."}),
            "tokens": ("INT", {"default": 512, "min": 1, "max": 4096, "tooltip": "Sequence length."}),
            "width": ("INT", {"default": 4096, "min": 1, "max": 8192, "tooltip": "umt5-xxl: 4096."}),
        }}

    def encode(self, text, tokens, width):
        return ([[stand_in_conditioning(text, tokens, width), {"pooled_output": None}]],)


NODE_CLASS_MAPPINGS = {"TMDTestConditioning": TMDTestConditioning}
'''


def write_test_pack(custom_nodes: Path) -> Path:
    """custom_nodes/tmd_test_nodes/__init__.py providing TMDTestConditioning."""
    pack = custom_nodes / TEST_PACK
    pack.mkdir(parents=True, exist_ok=True)
    (pack / "__init__.py").write_text(
        inspect.getsource(stand_in_conditioning) + NODE_SOURCE, encoding="utf-8"
    )
    return pack


def write_model_paths(root: Path) -> Path:
    """root/models/<folder> for each model folder, and an extra_model_paths.yaml that puts them first."""
    models = root / "models"
    lines = ["tmd_tests:", f"    base_path: {models}", "    is_default: true"]
    for folder in MODEL_FOLDERS:
        (models / folder).mkdir(parents=True, exist_ok=True)
        lines.append(f"    {folder}: {folder}")
    yaml = root / "extra_model_paths.yaml"
    yaml.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return yaml


def tiny_wan(seed: int = 0):
    """A 4-layer Wan2.1 t2v DiT ComfyUI can detect: 1 head x 128, freq_dim 256, text width 4096."""
    from helpers_wan import make_tiny_teacher

    return make_tiny_teacher(
        seed, num_attention_heads=1, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=256, num_layers=4,
    )  # fmt: skip


def write_wan_models(models: Path) -> dict[str, Path]:
    """models/tmd/TMD_NAME (a tmd/1 student, H = 2 of L = 4) and models/diffusion_models/TEACHER_NAME."""
    from helpers_wan import save_original_layout

    import tmd_core

    teacher = tiny_wan()
    tmd = tmd_core.save_tmd(tmd_core.TMDModel.from_teacher(teacher, head_blocks=2), models / "tmd" / TMD_NAME)
    plain = save_original_layout(
        teacher, models / "diffusion_models" / TEACHER_NAME, prefix="model.diffusion_model."
    )
    return {"tmd": tmd, "teacher": plain}


WAN_VAE_WRITER = """
import sys
from comfy.options import enable_args_parsing
enable_args_parsing(False)
from comfy.cli_args import args
args.cpu = True
import torch
from safetensors.torch import save_file
import comfy.ldm.wan.vae

with torch.device("meta"):  # the ddconfig comfy/sd.py uses for a Wan2.1 VAE
    vae = comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
g = torch.Generator().manual_seed(0)
out = {}
for name, t in vae.state_dict().items():
    if not name.startswith(("decoder.", "conv2.")):
        continue  # the encoder: VAEDecode does not use it
    if name.endswith(".gamma"):
        w = torch.ones(t.shape)  # RMS-norm scales
    elif t.ndim == 1:
        w = torch.zeros(t.shape)
    else:
        w = torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5
    out[name] = w.to(torch.bfloat16).contiguous()
save_file(out, sys.argv[1])
print(len(out))
"""


def write_wan_vae(path: Path, comfy_path: Path) -> Path:
    """A Wan2.1 VAE file VAELoader detects (see the module docstring), written with ComfyUI's venv."""
    py = comfy_path / ".venv" / "bin" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([str(py), "-c", textwrap.dedent(WAN_VAE_WRITER), str(path)], cwd=comfy_path,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    if p.returncode != 0:
        raise RuntimeError(f"could not write the Wan VAE:\n{p.stderr[-3000:]}")
    return path


TOY_TMD = "toy/toy_tmd.safetensors"  # the shipped toy student's name in TMDModelLoader (tmd_core/toy/assets)
TOY_TEACHER_NAME = "toy_tiny_teacher.safetensors"


def tiny_toy(seed: int = 0):
    """A 2-layer Wan in the toy world's formats (16 latent channels, patch 1, 32-wide toy text): fast on CPU."""
    from helpers_wan import make_tiny_teacher

    return make_tiny_teacher(seed, in_channels=16, out_channels=16, text_dim=32, num_layers=2, patch_size=[1, 1, 1])


def write_toy_student(models: Path) -> Path:
    """The toy student the toy workflow loads: the shipped asset when installed, else a random toy-shaped tmd/1
    at models/tmd/toy/toy_tmd.safetensors (a file in the model folder wins over the asset of the same name)."""
    import tmd_core
    from tmd_core.toy.shipped import ASSETS

    shipped = ASSETS / Path(TOY_TMD).name
    if shipped.is_file():
        return shipped
    student = tmd_core.TMDModel.from_teacher(tiny_toy(5), head_blocks=1, outer_shift=3.0)
    return tmd_core.save_tmd(student, models / "tmd" / TOY_TMD)


def write_toy_teacher(models: Path) -> Path:
    """models/diffusion_models/TOY_TEACHER_NAME (diffusers layout + config sidecar, as the shipped toy teacher)."""
    from helpers_wan import save_diffusers_single

    return save_diffusers_single(tiny_toy(6), models / "diffusion_models" / TOY_TEACHER_NAME, sidecar=True)


# ---------------------------------------------------------------- the native path (TMDApplyToModel)

TRAINED_NAME = "wan21_tiny_tmd_trained.safetensors"  # a student that differs from its teacher everywhere TMD can
MERGED_NAME = "wan21_tiny_tmd_trained_style.safetensors"  # the same student with the style LoRA merged by hand
TEACHER_BF16_NAME = "wan21_tiny_teacher_bf16.safetensors"
LORA_NAME = "wan21_tiny_style_lora.safetensors"
LORA_STRENGTH = 0.8
LORA_TARGETS = ("blocks.0.self_attn.q", "blocks.1.ffn.0", "blocks.3.cross_attn.o", "blocks.2.self_attn.v",
                "text_embedding.0", "head.head")  # backbone and head blocks, an embedding and the output layer


def trained_like_student(teacher, seed: int = 1):
    """A tmd/1 student (H = 2 of L = 4) standing in for a trained one: blocks 1 and 3, the time projection and
    the output layer moved off the teacher, fusion and gap embedding non-zero (the fresh student is the teacher).
    The same tensors on every call (seeded), so files written at different times agree."""
    import copy

    import torch

    import tmd_core

    with torch.random.fork_rng():  # the fusion layer's initialisation draws from the global RNG: same file each call
        torch.manual_seed(seed)
        student = tmd_core.TMDModel.from_teacher(copy.deepcopy(teacher), head_blocks=2)
    g = torch.Generator().manual_seed(seed)
    moved = ("transformer.blocks.1.", "transformer.blocks.3.", "transformer.condition_embedder.time_proj.",
             "transformer.proj_out.", "fusion.", "emb_gap.time_embedder.linear_2.")
    with torch.no_grad():
        for name, p in student.named_parameters():
            if name.startswith(moved):
                scale = 0.3 if name == "fusion.alpha" else 0.05 * (float(p.std()) if p.numel() > 1 else 1.0) + 0.01
                p.add_(scale * torch.randn(p.shape, generator=g))
    student.tmd_config.extra["trained"] = True
    return student


def style_lora(teacher, rank: int = 4, seed: int = 2) -> dict:
    """A LoRA in ComfyUI's generic format (`diffusion_model.<module>.lora_up/down.weight`, `.alpha`) over
    LORA_TARGETS of the teacher's original-layout weights."""
    import torch

    from tmd_core.layouts import diffusers_to_original_state_dict

    shapes = {k: v.shape for k, v in diffusers_to_original_state_dict(teacher.state_dict()).items()}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for target in LORA_TARGETS:
        n_out, n_in = shapes[target + ".weight"]
        key = "diffusion_model." + target
        out[key + ".lora_down.weight"] = torch.randn(rank, n_in, generator=g) / n_in**0.5
        out[key + ".lora_up.weight"] = 0.2 * torch.randn(n_out, rank, generator=g) / rank**0.5
        out[key + ".alpha"] = torch.tensor(float(rank) / 2)
    return out


def merge_lora(student, lora: dict, strength: float) -> None:
    """Merge `lora` into the student's transformer by hand: W += strength * (alpha / rank) * up @ down."""
    import torch

    from tmd_core.layouts import diffusers_key_to_original

    params = dict(student.transformer.named_parameters())
    by_original = {diffusers_key_to_original(k): k for k in params}
    with torch.no_grad():
        for key in {k.rsplit(".", 2)[0] for k in lora if k.endswith(".lora_up.weight")}:
            up, down = lora[key + ".lora_up.weight"], lora[key + ".lora_down.weight"]
            scale = float(lora[key + ".alpha"]) / down.shape[0]
            target = params[by_original[key[len("diffusion_model."):] + ".weight"]]
            target.add_(strength * scale * (up @ down))


def write_native_models(models: Path) -> dict[str, Path]:
    """The files the native-path tests need, beside write_wan_models' (same teacher, seed 0):
    models/tmd/TRAINED_NAME and MERGED_NAME (fp32), models/diffusion_models/TEACHER_BF16_NAME, models/loras/LORA_NAME."""
    from helpers_wan import save_original_layout
    from safetensors.torch import save_file

    import tmd_core

    teacher = tiny_wan()
    student = trained_like_student(teacher)
    lora = style_lora(teacher)
    out = {"trained": tmd_core.save_tmd(student, models / "tmd" / TRAINED_NAME)}
    merge_lora(student, lora, LORA_STRENGTH)
    out["merged"] = tmd_core.save_tmd(student, models / "tmd" / MERGED_NAME)
    out["teacher_bf16"] = save_original_layout(teacher, models / "diffusion_models" / TEACHER_BF16_NAME,
                                               prefix="model.diffusion_model.", dtype=__import__("torch").bfloat16)
    (models / "loras").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in lora.items()}, str(models / "loras" / LORA_NAME))
    out["lora"] = models / "loras" / LORA_NAME
    return out


# ---------------------------------------------------------------- TMD patches on the native path

PATCH_FULL_NAME = "wan21_tiny_tmd_trained.full.safetensors"  # TRAINED_NAME's patch at full rank (fp32 factors)
PATCH_LOW_NAME = "wan21_tiny_tmd_trained.lora8.safetensors"  # the same at rank 8
PATCH_LOW_AS_STUDENT = "wan21_tiny_tmd_trained_lora8_merged.safetensors"  # rank-8 patch merged by the library
PATCH_LOW_STYLE = "wan21_tiny_tmd_trained_lora8_style.safetensors"  # teacher + style LoRA by hand + rank-8 patch
PATCH_OTHER_NAME = "wan21_wide_tmd.lora4.safetensors"  # a patch for a wider, deeper Wan (the "14B on 1.3B" case)
PATCH_LOW_RANK = 8


def tiny_wan_wide(seed: int = 7):
    """A Wan2.1 t2v DiT of another architecture than tiny_wan: 2 heads (width 256), ffn 512, 6 layers."""
    from helpers_wan import make_tiny_teacher

    return make_tiny_teacher(
        seed, num_attention_heads=2, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=512, num_layers=6,
    )  # fmt: skip


def merge_lora_into_teacher(teacher, lora: dict, strength: float) -> None:
    """merge_lora for a plain teacher (diffusers WanTransformer3DModel)."""
    from types import SimpleNamespace

    merge_lora(SimpleNamespace(transformer=teacher), lora, strength)


def write_patch_models(models: Path) -> dict[str, Path]:
    """The TMD patches the native patch tests need, in models/tmd (same teacher and trained student as
    write_native_models): TRAINED_NAME's patch at full rank and at rank 8 (fp32 factors, `extract_patch_from_models`
    as `tmd extract-lora` runs it), the library's merges of the rank-8 patch as tmd/1 students (onto the teacher,
    and onto the teacher with the style LoRA merged by hand), and a patch of tiny_wan_wide."""
    import copy

    import torch
    from helpers_wan import moved_student

    import tmd_core
    from tmd_core.patch import apply_patch, extract_patch_from_models
    from tmd_core.patch_file import save_patch

    teacher = tiny_wan()
    student = trained_like_student(teacher)
    tmd = models / "tmd"
    full = extract_patch_from_models(student, teacher, 4096, dtype=torch.float32)  # rank >= every side: full rank
    low = extract_patch_from_models(student, teacher, PATCH_LOW_RANK, dtype=torch.float32)
    out = {"full": save_patch(full, tmd / PATCH_FULL_NAME), "low": save_patch(low, tmd / PATCH_LOW_NAME)}
    out["low_as_student"] = tmd_core.save_tmd(apply_patch(copy.deepcopy(teacher), low), tmd / PATCH_LOW_AS_STUDENT)
    styled = copy.deepcopy(teacher)
    merge_lora_into_teacher(styled, style_lora(teacher), LORA_STRENGTH)
    out["low_style"] = tmd_core.save_tmd(apply_patch(styled, low), tmd / PATCH_LOW_STYLE)
    wide = tiny_wan_wide()
    out["other"] = save_patch(extract_patch_from_models(moved_student(wide), wide, 4, dtype=torch.float32),
                              tmd / PATCH_OTHER_NAME)
    out["errors"] = {"full": full.errors[-1], "low": low.errors[-1]}  # the "stored" rows: residual of the factors
    return out
