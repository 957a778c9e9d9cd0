"""Toy-world nodes: text encoder, empty latent, decoder, and the shipped toy checkpoints in TMDModelLoader.

The shipped checkpoints are stood in for by `toy_assets` (small random toy-shaped models in a per-test
folder); the workflow test runs the chain of workflows/toy_tmd.json node by node.
"""


import pytest
import torch
from comfy_fakes import run_node

import tmd_core
from tmd_core.toy import render_clip
from tmd_core.toy.codec import decode_latents, encode_clips
from tmd_core.toy.text import ToyTextEncoder

PROMPT = "a red circle moving left fast"


def encode(nodes, text=PROMPT):
    (cond,) = run_node(nodes.TMDToyTextEncode, text=text).result
    return cond


def images(clips, scale=1):
    """The expected IMAGE: frames of every clip in turn, [B*F, H*scale, W*scale, 3] in [0, 1]."""
    frames = clips.permute(0, 2, 3, 4, 1).reshape(-1, *clips.shape[3:], 3)
    frames = frames.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return (frames + 1) / 2


def test_text_encode_gives_a_conditioning_of_the_toy_encoder(nodes):
    [[context, extra]] = encode(nodes)
    assert context.shape == (1, 8, 32) and extra == {"pooled_output": None}
    torch.testing.assert_close(context, ToyTextEncoder().encode([PROMPT]), rtol=0, atol=0)
    assert context[0, :6].abs().min() == 1 and context[0, 6:].abs().sum() == 0  # six words, zero padding


def test_unknown_words_are_refused_naming_the_vocabulary(nodes):
    with pytest.raises(ValueError, match=r"text: the toy text encoder does not know 'purple' in 'a purple circle'; "
                                         r"it knows: a, an, the, moving"):
        encode(nodes, "a purple circle")
    with pytest.raises(ValueError, match="has 9 words, the toy text encoder reads 8"):
        encode(nodes, "a red circle moving left fast a red circle")


def test_empty_latent_is_zeros_of_the_toy_shape(nodes):
    (latent,) = run_node(nodes.TMDToyEmptyLatent, batch_size=3).result
    assert latent["samples"].shape == (3, 16, 2, 4, 4) and latent["samples"].abs().sum() == 0


@pytest.mark.parametrize("scale", [1, 3])
def test_decode_gives_the_frames_of_the_toy_vae_in_0_1_upscaled_nearest(nodes, toy_assets, scale):
    clips = torch.stack([render_clip(PROMPT, seed=0), render_clip("a blue square moving up slow", seed=1)])
    vae = toy_assets / "toy_vae.safetensors"
    z = encode_clips(clips, vae)
    (img,) = run_node(nodes.TMDToyDecode, samples={"samples": z}, scale=scale).result
    assert img.shape == (16, 32 * scale, 32 * scale, 3) and img.dtype == torch.float32
    assert 0 <= img.min() and img.max() <= 1
    torch.testing.assert_close(img, images(decode_latents(z, vae), scale), rtol=0, atol=1e-5)


def test_decode_refuses_a_latent_of_another_shape_and_a_missing_vae(nodes, toy_assets):
    with pytest.raises(ValueError, match=r"decodes toy latents \[batch, 16, frames, h, w\], got \(1, 192, 2, 8, 8\): use VAEDecode"):
        run_node(nodes.TMDToyDecode, samples={"samples": torch.zeros(1, 192, 2, 8, 8)}, scale=1)
    (toy_assets / "toy_vae.safetensors").unlink()
    with pytest.raises(ValueError, match="the toy VAE is not installed"):
        run_node(nodes.TMDToyDecode, samples={"samples": torch.zeros(1, 16, 2, 4, 4)}, scale=1)


def test_loader_lists_the_shipped_toy_models_after_tmd_files_and_a_model_folder_file_wins(nodes, host, toy_assets, tmd_file, teacher_file):
    choices = nodes.TMDModelLoader.INPUT_TYPES()["required"]["ckpt_name"][1]["options"]
    assert choices == ["student.safetensors", "toy/toy_teacher.safetensors", "toy/toy_tmd.safetensors",
                       "diffusion_models/wan/teacher.safetensors"]  # fmt: skip
    assert nodes.host.resolve_checkpoint("toy/toy_tmd.safetensors") == str(toy_assets / "toy_tmd.safetensors")
    own = host.models_dir / "tmd" / "toy" / "toy_tmd.safetensors"
    own.parent.mkdir()
    own.write_bytes(tmd_file.read_bytes())
    assert nodes.TMDModelLoader.INPUT_TYPES()["required"]["ckpt_name"][1]["options"].count("toy/toy_tmd.safetensors") == 1
    assert nodes.host.resolve_checkpoint("toy/toy_tmd.safetensors") == str(own)


def test_the_toy_teacher_splits_with_head_blocks(nodes, toy_assets):
    (patcher,) = run_node(nodes.TMDModelLoader, ckpt_name="toy/toy_teacher.safetensors", head_blocks=1, dtype="default").result
    assert (patcher.model.head_blocks, patcher.model.num_layers) == (1, 2)
    assert patcher.model.latent_format is None  # no Wan21 stats: toy latents pass the sampler unchanged


def test_toy_workflow_output_is_the_decoded_library_sample(nodes, host, toy_assets):
    """workflows/toy_tmd.json: loader -> text encode, empty latent, schedule -> sampler -> decode (-> CreateVideo)."""
    (model,) = run_node(nodes.TMDModelLoader, ckpt_name="toy/toy_tmd.safetensors", head_blocks=5, dtype="default").result
    (schedule,) = run_node(nodes.TMDSchedule, outer_steps=2, inner_steps=2, outer_shift=3.0, inner_shift=3.0).result
    (latent,) = run_node(nodes.TMDToyEmptyLatent, batch_size=2).result
    (out,) = run_node(nodes.TMDSampler, model=model, positive=encode(nodes), latent=latent, schedule=schedule, seed=4).result
    (img,) = run_node(nodes.TMDToyDecode, samples=out, scale=2).result

    x0 = tmd_core.sample_tmd(tmd_core.load_tmd(toy_assets / "toy_tmd.safetensors"), tmd_core.make_noise((2, 16, 2, 4, 4), seed=4),
                             ToyTextEncoder().encode([PROMPT]), tmd_core.TMDSchedule(outer_steps=2, inner_steps=2, outer_shift=3.0, inner_shift=3.0))  # fmt: skip
    torch.testing.assert_close(out["samples"], x0, rtol=0, atol=1e-6)  # normalised toy latent, no Wan stats
    torch.testing.assert_close(img, images(decode_latents(x0, toy_assets / "toy_vae.safetensors"), 2), rtol=0, atol=1e-6)
    assert img.shape == (16, 64, 64, 3) and img.std() > 0.05  # a random model: not a flat frame
    assert host.progress == [(k, 4, None) for k in range(1, 5)]
