"""The decoupled student: docs/method.md §2.3 invariant, fusion options, input errors."""

import pytest
import torch
from helpers_wan import make_tiny_teacher, tiny_inputs

from tmd_core import ConfigError, InputError, TMDModel
from tmd_core.model import wan_timestep


def teacher_out(teacher, x, t, ctx):
    with torch.no_grad():
        return teacher(x, timestep=wan_timestep(t, x.shape[0], x.device), encoder_hidden_states=ctx,
                       return_dict=False)[0].float()


@pytest.mark.parametrize("head_blocks", [1, 2, 3])
@pytest.mark.parametrize("t", [0.05, 0.5, 0.999])
def test_fresh_student_equals_teacher(head_blocks, t):
    """head(fuse(B(x_t, t), y_s, s=t), s=t, r) == teacher(x_t, t) for any y_s and r (fp32, <= 1e-5)."""
    teacher = make_tiny_teacher(seed=1)
    student = TMDModel.from_teacher(teacher, head_blocks=head_blocks)
    x, ctx = tiny_inputs(teacher, batch=2, seed=3)
    ref = teacher_out(teacher, x, t, ctx)
    with torch.no_grad():
        out = student.backbone(x, t, ctx)
        for r in (0.0, t / 2):
            y_s = torch.randn_like(x)
            assert (student.head(out, y_s, t, r) - ref).abs().max().item() <= 1e-5


def test_trained_fusion_and_gap_make_the_head_depend_on_y_and_r():
    teacher = make_tiny_teacher(seed=1)
    student = TMDModel.from_teacher(teacher, head_blocks=2)
    with torch.no_grad():
        for p in list(student.fusion.parameters()) + list(student.emb_gap.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    x, ctx = tiny_inputs(teacher, seed=0)
    with torch.no_grad():
        out = student.backbone(x, 0.5, ctx)
        a = student.head(out, torch.randn_like(x), 0.5, 0.0)
        b = student.head(out, torch.randn_like(x), 0.5, 0.0)
        c = student.head(out, torch.zeros_like(x), 0.5, 0.4)
        d = student.head(out, torch.zeros_like(x), 0.5, 0.0)
    assert (a - b).abs().max() > 1e-4  # y_s enters through the fusion
    assert (c - d).abs().max() > 1e-4  # r enters through emb_gap(s - r)


def test_concat_fusion_starts_near_the_teacher():
    teacher = make_tiny_teacher(seed=2)
    student = TMDModel.from_teacher(teacher, head_blocks=2, fusion="concat")
    x, ctx = tiny_inputs(teacher, seed=0)
    ref = teacher_out(teacher, x, 0.7, ctx)
    with torch.no_grad():
        pred = student.head(student.backbone(x, 0.7, ctx), torch.randn_like(x), 0.7, 0.0)
    err = (pred - ref).abs().max().item()
    assert 0 < err < 0.2 * ref.abs().max().item()


def test_backbone_is_run_once_and_reused(monkeypatch):
    teacher = make_tiny_teacher(seed=0)
    student = TMDModel.from_teacher(teacher, head_blocks=1)
    calls = {"n": 0}
    orig = teacher.condition_embedder.text_embedder.forward

    def counting(*a, **k):
        calls["n"] += 1
        return orig(*a, **k)

    monkeypatch.setattr(teacher.condition_embedder.text_embedder, "forward", counting)
    x, ctx = tiny_inputs(teacher)
    with torch.no_grad():
        out = student.backbone(x, 0.9, ctx)
        for _ in range(3):
            student.head(out, torch.randn_like(x), 0.9, 0.5)
    assert calls["n"] == 1  # text projection computed once per transition, not per inner step


@pytest.mark.parametrize("h", [0, -1, 4, 7])
def test_head_blocks_out_of_range(h):
    teacher = make_tiny_teacher(seed=0)  # 4 layers
    with pytest.raises(ConfigError, match="head_blocks must be between 1 and 3"):
        TMDModel.from_teacher(teacher, head_blocks=h)


def test_unknown_fusion_kind():
    with pytest.raises(ConfigError, match="fusion must be one of 'gated', 'concat', got 'sum'"):
        TMDModel.from_teacher(make_tiny_teacher(seed=0), head_blocks=1, fusion="sum")


def test_input_errors_are_clear():
    teacher = make_tiny_teacher(seed=0)
    student = TMDModel.from_teacher(teacher, head_blocks=1)
    x, ctx = tiny_inputs(teacher)
    c = teacher.config.in_channels
    with pytest.raises(InputError, match=f"the model has {c} latent channels, the latent has {c + 1}"):
        student.backbone(torch.randn(1, c + 1, 3, 8, 8), 0.5, ctx)
    with pytest.raises(InputError, match=f"text embeddings of width {teacher.config.text_dim}"):
        student.backbone(x, 0.5, torch.randn(1, 7, teacher.config.text_dim + 3))
    with pytest.raises(InputError, match="must be 5-D"):
        student.backbone(x[:, :, 0], 0.5, ctx)
    with pytest.raises(InputError, match="must be positive multiples of the patch size 1x2x2"):
        student.backbone(torch.randn(1, c, 3, 7, 8), 0.5, ctx)
