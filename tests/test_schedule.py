"""Grids and effective NFE against the check values of docs/method.md §1, §3."""

import pytest
import torch

from tmd_core import InputError, TMDSchedule, effective_nfe, shifted_grid
from tmd_core.schedule import shift_time


def test_outer_grid_m2_gamma10_matches_method_check_values():
    t = TMDSchedule(outer_steps=2, inner_steps=1).outer_times()
    assert torch.allclose(t, torch.tensor([0.999, 0.9091, 0.0], dtype=torch.float64), atol=5e-5)
    assert t[1].item() == pytest.approx(10 / 11)


def test_inner_grid_n4_gamma10_matches_method_check_values():
    s = TMDSchedule(outer_steps=1, inner_steps=4).inner_times()
    expected = torch.tensor([0.999, 0.9677, 0.9091, 0.7692, 0.0], dtype=torch.float64)
    assert torch.allclose(s, expected, atol=5e-5)


def test_grid_is_descending_ends_at_zero_and_top_is_t_max():
    for steps in (1, 2, 3, 7):
        g = shifted_grid(steps, 3.0, t_max=0.95)
        assert g[0].item() == 0.95 and g[-1].item() == 0.0
        assert bool((g[:-1] > g[1:]).all())


def test_shift_one_is_uniform_and_shift_pushes_toward_noise():
    assert shift_time(0.5, 1.0) == 0.5
    assert shift_time(0.5, 10.0) > 0.5


def test_effective_nfe_check_values():
    # docs/method.md §3: 1.3B (L=30) M2 N2 H5 = 2.33, M1 N2 H5 = 1.17 (the paper's TMD-N2H5 M1); 14B (L=40) M1 N4 H5 = 1.375
    assert effective_nfe(2, 2, 5, 30) == pytest.approx(2.3333, abs=1e-4)
    assert effective_nfe(1, 2, 5, 30) == pytest.approx(1.1667, abs=1e-4)
    assert effective_nfe(1, 4, 5, 40) == pytest.approx(1.375)
    assert effective_nfe(3, 1, 5, 30) == 3.0  # one inner step costs exactly one teacher forward


@pytest.mark.parametrize("outer,inner", [(0, 1), (1, 0), (-2, 2)])
def test_impossible_step_counts_raise(outer, inner):
    with pytest.raises(InputError, match="must be an integer >= 1"):
        TMDSchedule(outer_steps=outer, inner_steps=inner)
    with pytest.raises(InputError, match=">= 1"):
        effective_nfe(outer, inner, 5, 30)


def test_effective_nfe_rejects_head_outside_model():
    with pytest.raises(InputError, match="head_blocks must be in 1..29"):
        effective_nfe(1, 2, 30, 30)


def test_explicit_outer_times():
    s = TMDSchedule(outer_times_override=(1.0, 0.5, 0.0))
    assert s.outer_steps == 2
    assert s.outer_times().tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(InputError, match="strictly descending"):
        TMDSchedule(outer_times_override=(0.5, 0.7, 0.0))
    with pytest.raises(InputError, match="exactly 0"):
        TMDSchedule(outer_times_override=(1.0, 0.5))
