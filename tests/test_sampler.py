"""Algorithm 1, the teacher's CFG Euler sampler and Eq. 18, against the teacher and each other."""

import pytest
import torch
from helpers_wan import make_tiny_teacher, tiny_inputs

from tmd_core import InputError, TMDModel, TMDSchedule, make_noise, sample_dmd, sample_teacher, sample_tmd
from tmd_core.model import wan_timestep


@pytest.fixture(scope="module")
def teacher():
    return make_tiny_teacher(seed=5)


def test_fresh_student_one_by_one_equals_one_teacher_euler_step(teacher):
    """docs/method.md §2.3: grid tops at 1.0, outer = inner = 1 -> x0 = x1 - v(x1, 1)."""
    student = TMDModel.from_teacher(teacher, head_blocks=2)
    _, ctx = tiny_inputs(teacher, batch=2)
    noise = make_noise((2, teacher.config.in_channels, 3, 8, 8), seed=11)
    x0 = sample_tmd(student, noise, ctx, TMDSchedule(outer_steps=1, inner_steps=1, t_max=1.0))
    with torch.no_grad():
        v = teacher(noise, timestep=wan_timestep(1.0, 2, "cpu"), encoder_hidden_states=ctx, return_dict=False)[0]
    assert (x0 - (noise - v)).abs().max().item() <= 1e-5
    x_teacher = sample_teacher(teacher, noise, ctx, steps=1, shift=1.0, guidance_scale=1.0)
    assert (x0 - x_teacher).abs().max().item() <= 1e-5


def test_eq18_is_euler_on_the_outer_grid(teacher):
    """Eq. 18 with g = x - t v reduces to x - (t_i - t_{i-1}) v: same as the teacher's Euler without CFG."""
    _, ctx = tiny_inputs(teacher)
    noise = make_noise((1, teacher.config.in_channels, 3, 8, 8), seed=1)
    x_dmd = sample_dmd(teacher, noise, ctx, TMDSchedule(outer_steps=3, inner_steps=1, outer_shift=3.0, t_max=1.0))
    x_euler = sample_teacher(teacher, noise, ctx, steps=3, shift=3.0, guidance_scale=1.0)
    assert (x_dmd - x_euler).abs().max().item() <= 1e-5


def test_same_seed_same_latents_different_seed_different(teacher):
    student = TMDModel.from_teacher(teacher, head_blocks=2)
    with torch.no_grad():
        for p in student.fusion.parameters():
            p.add_(0.05 * torch.randn_like(p))
    _, ctx = tiny_inputs(teacher)
    shape = (1, teacher.config.in_channels, 3, 8, 8)
    a = sample_tmd(student, make_noise(shape, 7), ctx, TMDSchedule(2, 2))
    b = sample_tmd(student, make_noise(shape, 7), ctx, TMDSchedule(2, 2))
    c = sample_tmd(student, make_noise(shape, 8), ctx, TMDSchedule(2, 2))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_callback_sees_every_inner_step_in_order(teacher):
    student = TMDModel.from_teacher(teacher, head_blocks=2)
    _, ctx = tiny_inputs(teacher)
    seen = []
    noise = make_noise((1, teacher.config.in_channels, 3, 8, 8), 0)
    sample_tmd(student, noise, ctx, TMDSchedule(2, 3), callback=lambda i, j, x0: seen.append((i, j, x0.shape)))
    assert [(i, j) for i, j, _ in seen] == [(i, j) for i in range(2) for j in range(3)]
    assert all(s == noise.shape for *_, s in seen)


def test_callback_exception_interrupts_sampling(teacher):
    student = TMDModel.from_teacher(teacher, head_blocks=2)
    _, ctx = tiny_inputs(teacher)

    class Stop(Exception):
        pass

    def cb(i, j, x0):
        if (i, j) == (0, 1):
            raise Stop

    with pytest.raises(Stop):
        sample_tmd(student, make_noise((1, teacher.config.in_channels, 3, 8, 8), 0), ctx, TMDSchedule(2, 3), callback=cb)


def test_teacher_cfg_combines_positive_and_negative(teacher):
    _, ctx = tiny_inputs(teacher, seed=1)
    _, neg = tiny_inputs(teacher, seed=2)
    noise = make_noise((1, teacher.config.in_channels, 3, 8, 8), 0)
    pos_only = sample_teacher(teacher, noise, ctx, steps=2, guidance_scale=1.0)
    neg_only = sample_teacher(teacher, noise, neg, steps=2, guidance_scale=1.0)
    w1 = sample_teacher(teacher, noise, ctx, steps=2, guidance_scale=1.0, negative_context=neg)
    w0 = sample_teacher(teacher, noise, ctx, steps=2, guidance_scale=1e-12, negative_context=neg)
    assert torch.allclose(w1, pos_only, atol=1e-5)
    assert torch.allclose(w0, neg_only, atol=1e-4)
    with pytest.raises(InputError, match="needs a negative_context"):
        sample_teacher(teacher, noise, ctx, steps=2, guidance_scale=5.0)


def test_sampler_input_errors(teacher):
    student = TMDModel.from_teacher(teacher, head_blocks=2)
    _, ctx = tiny_inputs(teacher)
    with pytest.raises(InputError, match="latent channels"):
        sample_tmd(student, torch.randn(1, 3, 3, 8, 8), ctx, TMDSchedule(1, 1))
    with pytest.raises(InputError, match="must be 5-D"):
        sample_teacher(teacher, torch.randn(1, 4, 8, 8), ctx, steps=1, guidance_scale=1.0)


def test_cfg_with_per_sample_times(teacher):
    """Training calls the teacher with one t per sample and CFG: equal to calling each sample alone."""
    from tmd_core.sampler import teacher_velocity

    x, ctx = tiny_inputs(teacher, batch=3, seed=4)
    _, neg = tiny_inputs(teacher, batch=1, seed=5)
    t = torch.tensor([0.2, 0.5, 0.9])
    with torch.no_grad():
        v = teacher_velocity(teacher, x, t, ctx, neg, guidance_scale=3.0)
        for i in range(3):
            vi = teacher_velocity(teacher, x[i : i + 1], float(t[i]), ctx[i : i + 1], neg, guidance_scale=3.0)
            assert (v[i : i + 1] - vi).abs().max().item() <= 1e-5
