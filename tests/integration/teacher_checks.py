"""Run inside ComfyUI's venv (cwd = the ComfyUI checkout): TMDDistill's teacher from a native MODEL with a LoRA,
against the same LoRA merged into the teacher file by hand, and what it shares with the MODEL.

usage: python teacher_checks.py REPO TEACHER TEACHER_BF16 LORA STRENGTH WORKDIR  -> prints JSON=...

MODELs load as UNETLoader loads them (comfy.sd.load_diffusion_model, under inference mode as ComfyUI's executor
runs nodes), LoRAs as LoraLoaderModelOnly (comfy.sd.load_lora_for_models). The teacher is then used the way
TMDDistill uses it: it makes the run's data (2 teacher samples) and stage 1 + stage 2 train one step each
(stage 2 backpropagates through the frozen teacher).
"""

import hashlib
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
import comfy.utils  # noqa: E402
import torch  # noqa: E402

repo, teacher_path, bf16_path, lora_path, strength, workdir = args_in
strength = float(strength)
spec = importlib.util.spec_from_file_location("comfyui_tmd", f"{repo}/__init__.py", submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec)
sys.modules["comfyui_tmd"] = pack
spec.loader.exec_module(pack)  # as ComfyUI imports a pack folder
from comfyui_tmd.nodes import host  # noqa: E402
from comfyui_tmd.nodes.teacher_model import storage_report, teacher_from_model  # noqa: E402
from comfyui_tmd.tmd_core.layouts import diffusers_key_to_original  # noqa: E402
from comfyui_tmd.tmd_core.loading import load_teacher  # noqa: E402
from comfyui_tmd.tmd_core.training.data import ShardDataset  # noqa: E402
from comfyui_tmd.tmd_core.training.distill import data_request, distill_in_process, make_config  # noqa: E402
from comfyui_tmd.tmd_core.training.make_data import make_data  # noqa: E402

torch.manual_seed(0)
out = {}


def model_fingerprint(m) -> tuple[dict, str]:
    """(key -> storage pointer, sha256 of every weight's bytes) of a MODEL's diffusion model."""
    sd = m.model_state_dict("diffusion_model.")
    digest = hashlib.sha256()
    for k in sorted(sd):
        digest.update(k.encode() + sd[k].detach().contiguous().view(torch.uint8).numpy().tobytes())
    return {k: v.untyped_storage().data_ptr() for k, v in sd.items()}, digest.hexdigest()


def merged_by_hand(path, lora: dict, s: float):
    """The teacher file as diffusers' model with W += s * (alpha / rank) * up @ down merged into its weights."""
    teacher = load_teacher(path)
    params = dict(teacher.named_parameters())
    by_original = {diffusers_key_to_original(k): k for k in params}
    with torch.no_grad():
        for key in {k.rsplit(".", 2)[0] for k in lora if k.endswith(".lora_up.weight")}:
            up, down = lora[key + ".lora_up.weight"], lora[key + ".lora_down.weight"]
            target = params[by_original[key[len("diffusion_model."):] + ".weight"]]
            target.add_(s * float(lora[key + ".alpha"]) / down.shape[0] * (up @ down))
    return teacher


lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
with torch.inference_mode():  # what ComfyUI's executor does around every node
    base = comfy.sd.load_diffusion_model(teacher_path)  # UNETLoader
    styled = comfy.sd.load_lora_for_models(base, None, lora, strength, 0)[0]  # LoraLoaderModelOnly
    base8 = comfy.sd.load_diffusion_model(bf16_path, model_options={"dtype": torch.float8_e4m3fn})
    styled8 = comfy.sd.load_lora_for_models(base8, None, lora, strength, 0)[0]
ptrs_before, sha_before = model_fingerprint(styled)
patches_before = {k: len(v) for k, v in styled.patches.items()}

g = torch.Generator().manual_seed(3)
shape = (1, 16, 1, 4, 4)
x, context = torch.randn(shape, generator=g), torch.zeros(1, 512, 4096)
context[:, :5] = torch.randn(1, 5, 4096, generator=g)
timestep = torch.tensor([700.0])

with host.training_mode():
    teacher = teacher_from_model(styled)
    plain = teacher_from_model(base)
    hand = merged_by_hand(teacher_path, lora, strength)
    with torch.no_grad():
        v = teacher(x, timestep, context, return_dict=False)[0]
        v_hand = hand(x, timestep, context, return_dict=False)[0]
        v_plain = plain(x, timestep, context, return_dict=False)[0]
    out["velocity_vs_merged_max_abs"] = float((v - v_hand).abs().max())
    out["lora_effect_max_abs"] = float((v_hand - v_plain).abs().max())
    out["velocity_scale"] = float(v_hand.abs().max())
    report = storage_report(teacher, styled)
    out |= {f"teacher_{k}": n for k, n in report.items()}
    out["lora_target_bytes"] = sum(styled.model_state_dict("diffusion_model.")[k].nbytes for k in styled.patches)
    out["model_weight_bytes"] = sum(t.nbytes for t in styled.model_state_dict("diffusion_model.").values())
    out["teacher_inference_tensors"] = sum(p.is_inference() for p in teacher.parameters())

    # in training: the teacher makes the run's data and is the frozen teacher of both stages
    prompts = ["a fox", "a red square"]
    contexts = [torch.zeros(512, 4096) for _ in prompts]
    for i, c in enumerate(contexts):
        c[: 3 + i] = torch.randn(3 + i, 4096, generator=g)
    negative = torch.zeros(512, 4096)
    request = data_request(teacher, prompts, contexts, negative, frames=1, height=32, width=32, samples_per_prompt=1,
                           steps=2, shift=8.0, guidance_scale=5.0, seed=4)
    run = os.path.join(workdir, "run")
    cfg = make_config(teacher, run, os.path.join(run, "data"), name="lora_teacher", stages=("stage1", "stage2"),
                      device="cpu", overrides={"batch_size": 2, "model": {"head_blocks": 1},
                                               "stage1": {"iterations": 1}, "stage2": {"iterations": 1}})
    result = distill_in_process(teacher, cfg, data_request=request)
    out["trained"] = bool(result.complete)
    ref = os.path.join(workdir, "ref")
    make_data(hand, ref, contexts=contexts, prompts=prompts, negative_context=negative,
              latent_shape=request["latent_shape"], steps=2, shift=8.0, guidance_scale=5.0, seed=4)
    made, wanted = ShardDataset(os.path.join(run, "data")), ShardDataset(ref)
    out["data_vs_merged_max_abs"] = max(float((made.sample(i)[0] - wanted.sample(i)[0]).abs().max())
                                        for i in range(len(made)))

    # fp8 weights (UNETLoader weight_dtype fp8_e4m3fn) + the LoRA: upcast to bf16 copies
    teacher8 = teacher_from_model(styled8)
    out["fp8_teacher_dtype"] = str(next(teacher8.parameters()).dtype)
    out |= {f"fp8_teacher_{k}": n for k, n in storage_report(teacher8, styled8).items()}
    out["fp8_model_weight_bytes"] = sum(t.nbytes for t in styled8.model_state_dict("diffusion_model.").values())
    hand16 = merged_by_hand(bf16_path, lora, strength)
    with torch.no_grad():
        v8 = teacher8.float()(x, timestep, context, return_dict=False)[0]
        v16 = hand16.float()(x, timestep, context, return_dict=False)[0]
    out["fp8_vs_bf16_rel_l2"] = float((v8 - v16).norm() / v16.norm())

ptrs_after, sha_after = model_fingerprint(styled)
out["model_unchanged"] = ptrs_after == ptrs_before and sha_after == sha_before
out["model_patches_unchanged"] = {k: len(v) for k, v in styled.patches.items()} == patches_before
print("JSON=" + json.dumps(out))
