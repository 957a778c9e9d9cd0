"""TMDSampler: native CONDITIONING + LATENT in, a raw VAE-space LATENT out for the native VAEDecode.

VAEDecode hands `latent["samples"]` unchanged to the VAE (`vae.decode(samples["samples"])`), so the
node's output latent is exactly what gets decoded; the real-host run of the same path is in
tests/integration/test_wan_workflow.py.
"""

import pytest
import torch
from comfy_fakes import run_node

import tmd_core

SHAPE = (1, 16, 2, 4, 4)  # (B, C, F, H, W): 5 video frames at 32x32 pixels for the Wan2.1 VAE


def conditioning(width=24, tokens=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, width, generator=g), {"pooled_output": None}]]


def empty_latent(shape=SHAPE):
    return {"samples": torch.zeros(shape)}  # what EmptyHunyuanLatentVideo gives


def run(nodes, patcher, positive=None, latent=None, outer=2, inner=3, seed=7):
    (schedule,) = run_node(nodes.TMDSchedule, outer_steps=outer, inner_steps=inner, outer_shift=10.0,
                           inner_shift=10.0).result
    (out,) = run_node(nodes.TMDSampler, model=patcher, positive=positive or conditioning(),
                      latent=latent or empty_latent(), schedule=schedule, seed=seed).result
    return out


@pytest.fixture
def student(nodes, tmd_file):
    (patcher,) = run_node(nodes.TMDModelLoader, ckpt_name="student.safetensors", head_blocks=5, dtype="default").result
    return patcher


def test_output_is_the_library_sample_denormalised_with_wan21_stats(nodes, host, tmd_file, student):
    latent = {**empty_latent(), "batch_index": [3]}
    out = run(nodes, student, latent=latent, seed=7)
    x0 = tmd_core.sample_tmd(
        tmd_core.load_tmd(tmd_file),
        tmd_core.make_noise(SHAPE, seed=7),
        conditioning()[0][0],
        tmd_core.TMDSchedule(outer_steps=2, inner_steps=3, outer_shift=10.0, inner_shift=10.0),
    )
    wan21 = host.latent_formats.Wan21()
    expected = x0 * wan21.latents_std + wan21.latents_mean  # ComfyUI's Wan21.process_out
    assert out["samples"].shape == SHAPE and out["samples"].dtype == torch.float32
    torch.testing.assert_close(out["samples"], expected, rtol=0, atol=1e-6)
    assert not torch.allclose(out["samples"], x0, atol=1e-2)  # de-normalised for real, not passed through
    assert (
        out["batch_index"] == [3] and latent["samples"].abs().sum() == 0
    )  # other keys kept, input untouched
    assert host.model_management.loaded_calls == [[student]]  # loaded through model management


def test_same_seed_same_latent_other_seed_other_latent(nodes, student):
    a, b, c = (run(nodes, student, seed=s)["samples"] for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_progress_reaches_outer_times_inner_steps(nodes, host, student):
    run(nodes, student, outer=2, inner=3)
    assert host.progress == [(k, 6, None) for k in range(1, 7)]


def test_a_model_without_wan21_latents_reports_progress_without_previews_and_no_stats(nodes, host):
    from helpers_wan import make_tiny_teacher

    path = host.models_dir / "tmd" / "four.safetensors"
    tmd_core.save_tmd(tmd_core.TMDModel.from_teacher(make_tiny_teacher(2), head_blocks=1), path)
    (patcher,) = run_node(nodes.TMDModelLoader, ckpt_name="four.safetensors", head_blocks=5, dtype="default").result
    assert patcher.model.latent_format is None
    out = run(nodes, patcher, latent=empty_latent((1, 4, 2, 4, 4)), outer=1, inner=2)
    x0 = tmd_core.sample_tmd(tmd_core.load_tmd(path), tmd_core.make_noise((1, 4, 2, 4, 4), seed=7),
                             conditioning()[0][0], tmd_core.TMDSchedule(outer_steps=1, inner_steps=2))  # fmt: skip
    torch.testing.assert_close(out["samples"], x0, rtol=0, atol=1e-6)
    assert host.progress == [(1, 2, None), (2, 2, None)]


def test_interrupt_stops_sampling_at_the_next_inner_step(nodes, host, student, monkeypatch):
    model = student.model
    calls = []
    head = model.head

    def head_then_interrupt(*args, **kwargs):
        calls.append(1)
        host.interrupt()  # what POST /interrupt does while the node runs
        return head(*args, **kwargs)

    monkeypatch.setattr(model, "head", head_then_interrupt)
    with pytest.raises(host.model_management.InterruptProcessingException):
        run(nodes, student, outer=3, inner=4)
    assert len(calls) == 1 and host.progress == []  # 1 of 12 head steps ran; nothing after it
    assert not host.model_management.processing_interrupted()  # raising cleared the flag, as in ComfyUI


def test_latent_with_other_channel_count_is_refused(nodes, student):
    with pytest.raises(
        ValueError, match="the model has 16 latent channels, the latent has 4: use a latent made"
    ):
        run(nodes, student, latent=empty_latent((1, 4, 2, 4, 4)))


def test_image_latent_is_refused(nodes, student):
    with pytest.raises(
        ValueError, match=r"must be 5-D \[batch, channels, frames, height, width\], got \(1, 16, 4, 4\)"
    ):
        run(nodes, student, latent=empty_latent((1, 16, 4, 4)))


def test_conditioning_of_other_width_is_refused(nodes, student):
    with pytest.raises(
        ValueError, match="expects text embeddings of width 24, the text context has width 4096: encode"
    ):
        run(nodes, student, positive=conditioning(width=4096))


@pytest.mark.parametrize("positive", [[], [["text", {}]]])
def test_something_else_than_conditioning_is_refused(nodes, student, positive):
    with pytest.raises(ValueError, match="positive must be a CONDITIONING from a text encoder node"):
        run_node(nodes.TMDSampler, model=student, positive=positive, latent=empty_latent(),
                                  schedule=tmd_core.TMDSchedule(), seed=0)  # fmt: skip
