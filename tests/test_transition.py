"""The inner flow on exact 1-D flows (docs/method.md §2): u = (y_s - head) / s is exact, u = y1 - head is not.

A 1-D target distribution (Gaussian or a two-mode mixture) has a closed-form posterior E[y | y_s] for the
path y_s = (1 - s) y + s y1 (Eq. 5), hence a closed-form marginal velocity and, by RK4, the exact flow
map Φ_{s→r}. The head that TM-MF training converges to is derived from the exact average velocity
u* = (y_s - Φ_{s→r}(y_s)) / (s - r) for each parameterisation; the sampler's `inner_flow` then
transports N(0, 1) to the target only with the current-point velocity.
"""

import math

import pytest
import torch

from tmd_core.model import BackboneOut
from tmd_core.training.stage1_tmmf import meanflow_target
from tmd_core.transition import average_velocity, flow_map_step, inner_flow

GRID = [0.999, 0.75, 0.0]  # the toy preset's inner grid: N = 2, γ = 3


class Mixture1D:
    """p(y) = Σ_k w_k N(μ_k, σ_k²); every tensor below is float64 with shape [n, 1, 1, 1, 1]."""

    def __init__(self, means, stds, weights=None):
        self.mu = torch.tensor(means, dtype=torch.float64)
        self.sd = torch.tensor(stds, dtype=torch.float64)
        self.w = torch.full_like(self.mu, 1 / len(means)) if weights is None else torch.tensor(weights, dtype=torch.float64)

    @property
    def std(self) -> float:
        m = (self.w * self.mu).sum()
        return float(((self.w * (self.sd**2 + self.mu**2)).sum() - m**2).sqrt())

    def _components(self, y_s, s):
        """Per component k (last axis): responsibility p(k | y_s), posterior mean and variance of y."""
        s = torch.as_tensor(s, dtype=torch.float64).reshape(-1, *([1] * y_s.ndim)).clamp(min=1e-9)
        y_k = y_s.unsqueeze(-1)  # [..., 1] against the components' [K]
        var = (1 - s) ** 2 * self.sd**2 + s**2  # Var[y_s | k]
        logp = torch.log(self.w) - 0.5 * (y_k - (1 - s) * self.mu) ** 2 / var - 0.5 * torch.log(var)
        gain = (1 - s) * self.sd**2 / var
        return torch.softmax(logp, dim=-1), self.mu + gain * (y_k - (1 - s) * self.mu), self.sd**2 * (1 - gain * (1 - s))

    def posterior_mean(self, y_s, s):
        resp, mean_k, _ = self._components(y_s, s)
        return (resp * mean_k).sum(-1)

    def posterior_sample(self, y_s, s, generator):
        resp, mean_k, var_k = self._components(y_s, s)
        k = torch.multinomial(resp.reshape(-1, resp.shape[-1]), 1, generator=generator).reshape(*y_s.shape, 1)
        eps = torch.randn(y_s.shape, generator=generator, dtype=torch.float64)
        var_k = var_k.expand_as(mean_k)
        return mean_k.gather(-1, k).squeeze(-1) + var_k.gather(-1, k).squeeze(-1).sqrt() * eps

    def velocity(self, y, s):
        """Marginal dy/ds = E[y1 - y | y_s] = (y_s - E[y | y_s]) / s."""
        s_b = torch.as_tensor(s, dtype=torch.float64).reshape(-1, *([1] * (y.ndim - 1))).clamp(min=1e-9)
        return (y - self.posterior_mean(y, s_b)) / s_b

    def _integrate(self, y_s, s, r, steps=60):
        """RK4 from s to r (per-sample) of the flow and of ∫ E[y | y_τ] dτ along it: (Φ_{s→r}(y_s), ∫_r^s)."""
        s = torch.as_tensor(s, dtype=torch.float64).reshape(-1) * torch.ones(y_s.shape[0], dtype=torch.float64)
        r = torch.as_tensor(r, dtype=torch.float64).reshape(-1) * torch.ones(y_s.shape[0], dtype=torch.float64)
        h = ((r - s) / steps).view(-1, *([1] * (y_s.ndim - 1)))
        y, t, acc = y_s.clone(), s.view_as(h).clone(), torch.zeros_like(y_s)

        def f(y, t):
            mean = self.posterior_mean(y, t)
            return (y - mean) / t.clamp(min=1e-9), mean

        for _ in range(steps):
            k1 = f(y, t)
            k2 = f(y + 0.5 * h * k1[0], t + 0.5 * h)
            k3 = f(y + 0.5 * h * k2[0], t + 0.5 * h)
            k4 = f(y + h * k3[0], t + h)
            y = y + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            acc = acc - h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
            t = t + h
        return y, acc

    def flow_map(self, y_s, s, r):
        """Φ_{s→r}(y_s): the exact marginal flow from s down to r."""
        return self._integrate(y_s, s, r)[0]

    def mean_posterior_mean(self, y_s, s, r):
        """(1 / (s - r)) ∫_r^s E[y | y_τ] dτ along the flow through y_s."""
        return self._integrate(y_s, s, r)[1] / (s - r)

    def average_velocity(self, y_s, s, r):
        """u*(y_s, s, r) = (y_s - Φ_{s→r}(y_s)) / (s - r); the marginal velocity where r = s."""
        s_b = torch.as_tensor(s, dtype=torch.float64).reshape(-1, *([1] * (y_s.ndim - 1)))
        r_b = torch.as_tensor(r, dtype=torch.float64).reshape(-1, *([1] * (y_s.ndim - 1)))
        gap = (s_b - r_b).expand_as(y_s)
        avg = (y_s - self.flow_map(y_s, s, r)) / gap.clamp(min=1e-12)
        return torch.where(gap > 0, avg, self.velocity(y_s, s_b))


class OptimalHead:
    """The head TM-MF converges to under u = (y_s - head) / s: head = y_s - s u*."""

    def __init__(self, target: Mixture1D):
        self.target = target

    def head(self, out, y_s, s, r):
        s_b = torch.as_tensor(s, dtype=torch.float64).reshape(-1, *([1] * (y_s.ndim - 1)))
        return y_s - s_b * self.target.average_velocity(y_s, s, r)


def _out(n):
    return BackboneOut(m=torch.zeros(n, 1, 1), context=torch.zeros(n, 1, 1), rotary_emb=None,
                       latent_shape=(n, 1, 1, 1, 1), t=torch.zeros(n))


TARGETS = {"gaussian 0.5": Mixture1D([0.0], [0.5]), "gaussian 1.0": Mixture1D([0.0], [1.0]),
           "two modes ±1.5": Mixture1D([-1.5, 1.5], [0.2, 0.2])}


@pytest.mark.parametrize("name", list(TARGETS))
def test_inner_flow_with_the_optimal_head_reproduces_the_target(name):
    target = TARGETS[name]
    n = 4000
    y1 = torch.randn(n, 1, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        y = inner_flow(OptimalHead(target), _out(n), y1, GRID)
    assert abs(float(y.std()) - target.std) < 0.02 * target.std + 0.01
    assert abs(float(y.mean())) < 4 * target.std / n**0.5
    if len(target.mu) == 2:  # both modes kept, with their own width
        near = [(y - m).abs() < 0.6 for m in (-1.5, 1.5)]
        assert all(0.45 < float(k.double().mean()) < 0.55 for k in near)
        assert abs(float(y[near[1]].std()) - 0.2) < 0.03


def _legacy_inner_flow(target, y1, grid):
    """The first reading, u = y1 - head, with the head its training converges to.

    The network sees y_s, not y1, so TM-MF's fixed point is head + (s - r) D head = E[y | y_s] (D: the
    derivative along the marginal flow), i.e. head = (1 / (s - r)) ∫_r^s E[y | y_τ] dτ. A step then moves
    y_s - (s - r) y1 + ∫ E[y | y_τ] dτ where the flow moves y_s - ∫ (E[y1 | y_τ] - E[y | y_τ]) dτ.
    """
    y = y1
    for s, r in zip(grid, grid[1:]):
        y = y - (s - r) * (y1 - target.mean_posterior_mean(y, s, r))
    return y


@pytest.mark.parametrize("name, shrunk_std", [("gaussian 0.5", 0.245), ("gaussian 1.0", 0.62), ("two modes ±1.5", 1.07)])
def test_the_initial_noise_reading_shrinks_the_distribution(name, shrunk_std):
    """The measured bias of u = y1 - head (docs/method.md §2): std 0.245 for 0.5, 0.62 for 1.0, 1.07 for 1.51."""
    target = TARGETS[name]
    y1 = torch.randn(4000, 1, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = _legacy_inner_flow(target, y1, GRID)
    assert abs(float(y.std()) - shrunk_std) < 0.02
    assert float(y.std()) < 0.75 * target.std


def test_one_step_from_one_returns_the_head_and_steps_compose():
    """y_r = (r/s) y_s + (1 - r/s) head; from s = 1 to r = 0 that is the head (the decoupling invariant)."""
    g = torch.Generator().manual_seed(1)
    y_s, head = torch.randn(3, 2, 1, 2, 2, generator=g), torch.randn(3, 2, 1, 2, 2, generator=g)
    assert torch.equal(flow_map_step(y_s, head, 1.0, 0.0), head)
    s, r = torch.tensor([0.9, 0.5, 0.3]), torch.tensor([0.2, 0.5, 0.0])
    ref = (r / s).view(-1, 1, 1, 1, 1) * y_s + (1 - r / s).view(-1, 1, 1, 1, 1) * head
    assert torch.allclose(flow_map_step(y_s, head, s, r), ref, atol=1e-6)
    assert torch.allclose(average_velocity(y_s, head, 0.5), (y_s - head) / 0.5)


@pytest.mark.parametrize("s, r", [(0.9, 0.75), (0.6, 0.0), (0.3, 0.3)])
def test_the_stage1_target_is_unbiased_at_the_optimal_head(s, r):
    """E[û | y_s] = u* at the optimal head: the exact average velocity is a fixed point of TM-MF training
    (û = v - (s - r) du/ds with the conditional v = y1 - y, finite differences as in training)."""
    target = TARGETS["two modes ±1.5"]
    g = torch.Generator().manual_seed(2)
    for y_value in (-1.2, 0.1, 0.9):
        n = 1000
        y_s = torch.full((n, 1, 1, 1, 1), y_value, dtype=torch.float64)
        y = target.posterior_sample(y_s, s, g)  # y ~ p(y | y_s), then y1 is fixed by y_s
        y1 = (y_s - (1 - s) * y) / s
        v = y1 - y
        s_t, r_t = torch.full((n,), s, dtype=torch.float64), torch.full((n,), r, dtype=torch.float64)
        with torch.no_grad():
            u_hat = meanflow_target(OptimalHead(target), _out(n), y_s, v, s_t, r_t, 5e-3)
        truth = float(target.average_velocity(y_s[:1], s, r))
        sem = float(u_hat.std()) / math.sqrt(n)
        assert abs(float(u_hat.mean()) - truth) < 4 * sem + 2e-3, (y_value, float(u_hat.mean()), truth)
