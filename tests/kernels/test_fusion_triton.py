"""The fusion layer gives the same head output and gradients on the Triton kernels as on the reference."""

import pytest
import torch
from helpers_wan import make_tiny_teacher, tiny_inputs

from tmd_core import TMDModel


@pytest.mark.slow
def test_fusion_layer_triton_matches_torch(triton_device):
    student = TMDModel.from_teacher(make_tiny_teacher(seed=4), head_blocks=2).to(triton_device)
    with torch.no_grad():
        for p in student.fusion.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, ctx = tiny_inputs(student.transformer, batch=2, seed=1)
    x, ctx = x.to(triton_device), ctx.to(triton_device)
    y = torch.randn_like(x)
    results = {}
    for backend in ("torch", "triton"):
        student.fusion.backend = backend
        student.zero_grad()
        pred = student.head(student.backbone(x, 0.6, ctx), y, 0.6, 0.2)
        pred.square().mean().backward()
        results[backend] = (pred.detach(), student.fusion.alpha.grad.clone(), student.fusion.fc2.weight.grad.clone())
    for a, b in zip(results["torch"], results["triton"]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()
    assert results["torch"][1].abs() > 0  # the comparison is not between two zeros


def test_auto_uses_the_reference_on_cpu():
    from tmd_core.kernels import resolve_backend

    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(Exception, match="unknown kernel backend"):
        resolve_backend("cuda-magic", "cpu")
