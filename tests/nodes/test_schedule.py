"""TMDSchedule: widget settings, or explicit outer times from a native SIGMAS input."""

import pytest
import torch
from comfy_fakes import run_node


def make(nodes, sigmas=None, **widgets):
    settings = {"outer_steps": 3, "inner_steps": 4, "outer_shift": 5.0, "inner_shift": 2.0, **widgets}
    (schedule,) = run_node(nodes.TMDSchedule, **settings, sigmas=sigmas).result
    return schedule


def test_widgets_give_shifted_grids(nodes):
    from tmd_core.schedule import shifted_grid

    s = make(nodes)
    assert (s.outer_steps, s.inner_steps, s.outer_times_override) == (3, 4, None)
    assert torch.equal(s.outer_times(), shifted_grid(3, 5.0))
    assert torch.equal(s.inner_times(), shifted_grid(4, 2.0))
    assert s.outer_times()[0].item() == pytest.approx(0.999) and s.outer_times()[-1].item() == 0.0


def test_sigmas_override_outer_steps_and_shift_but_not_the_inner_grid(nodes):
    from tmd_core.schedule import shifted_grid

    sigmas = torch.tensor([1.0, 0.9, 0.5, 0.0])  # what BasicScheduler/ModelSamplingSD3 give: float32, 1 -> 0
    s = make(nodes, sigmas=sigmas, outer_steps=1, outer_shift=50.0)
    assert s.outer_steps == 3
    assert s.outer_times().tolist() == pytest.approx([1.0, 0.9, 0.5, 0.0])
    assert torch.equal(s.inner_times(), shifted_grid(4, 2.0))


@pytest.mark.parametrize(
    "sigmas",
    [
        torch.tensor([0.5, 0.9, 0.0]),
        torch.tensor([1.0, 0.5]),
        torch.tensor([2.0, 1.0, 0.0]),
        torch.tensor([0.0]),
    ],
)
def test_unusable_sigmas_are_refused_with_what_is_expected(nodes, sigmas):
    with pytest.raises(
        ValueError, match="explicit outer times must be strictly descending from <= 1 to exactly 0"
    ):
        make(nodes, sigmas=sigmas)


def test_zero_steps_are_refused_by_the_library_too(nodes):
    with pytest.raises(ValueError, match="outer_steps must be an integer >= 1, got 0"):
        make(nodes, outer_steps=0)
