"""docs/method.md §2.3's decoupling invariant for a teacher loaded from every supported file layout.

head(fuse(backbone(x_t, t), y_s, s = t), s = t, r) == teacher(x_t, t), max abs error <= 1e-5 in fp32,
and with both grid tops at 1.0 a fresh student at outer = inner = 1 equals one teacher Euler step.
"""

import pytest
import torch
from helpers_wan import (
    make_tiny_teacher,
    save_diffusers_folder,
    save_diffusers_single,
    save_original_layout,
    tiny_inputs,
)

from tmd_core import TMDModel, TMDSchedule, load_teacher, make_noise, sample_teacher, sample_tmd
from tmd_core.model import wan_timestep

LAYOUTS = {
    "comfyui-original": lambda m, d: save_original_layout(m, d / "wan.safetensors", sidecar=True),
    "comfyui-prefixed": lambda m, d: save_original_layout(m, d / "wan.safetensors", prefix="model.diffusion_model.", sidecar=True),
    "diffusers-single": lambda m, d: save_diffusers_single(m, d / "wan.safetensors", sidecar=True),
    "diffusers-folder": lambda m, d: save_diffusers_folder(m, d / "wan"),
    "diffusers-folder-sharded": lambda m, d: save_diffusers_folder(m, d / "wan", max_shard_size="40KB"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_invariant_holds_for_every_layout(layout, tmp_path):
    source = make_tiny_teacher(seed=9)
    teacher = load_teacher(LAYOUTS[layout](source, tmp_path))
    student = TMDModel.from_teacher(teacher, head_blocks=2)
    x, ctx = tiny_inputs(teacher, batch=2, seed=2)
    for t in (0.25, 0.9):
        with torch.no_grad():
            ref = teacher(x, timestep=wan_timestep(t, 2, "cpu"), encoder_hidden_states=ctx, return_dict=False)[0]
            pred = student.head(student.backbone(x, t, ctx), torch.randn_like(x), t, 0.0)
        assert (pred - ref).abs().max().item() <= 1e-5
    # the full sampler: outer = inner = 1 with grid tops at 1.0 == one Euler step of the teacher
    noise = make_noise(x.shape, seed=5)
    x_tmd = sample_tmd(student, noise, ctx, TMDSchedule(outer_steps=1, inner_steps=1, t_max=1.0))
    x_euler = sample_teacher(teacher, noise, ctx, steps=1, shift=1.0, guidance_scale=1.0)
    assert (x_tmd - x_euler).abs().max().item() <= 1e-5
