"""The toy VAE (tmd_core/toy/autoencoder.py): shapes, errors, files, training state, the DiT it feeds."""

import pytest
import torch

from tmd_core.errors import CheckpointError, InputError
from tmd_core.toy.autoencoder import ToyVAE, VAEConfig, VAETrainConfig, load_vae, save_vae, train_vae
from tmd_core.toy.latent import LATENT_SHAPE, latent_shape, suggested_transformer_config
from tmd_core.toy.text import ToyTextEncoder
from tmd_core.toy.world import training_batch


def test_compression_is_wans_4x_time_8x_space_16_channels():
    vae = ToyVAE().eval()
    clips, _ = training_batch(2, seed=0)
    z = vae.encode(clips)
    assert z.shape == (2, *LATENT_SHAPE) == (2, 16, 2, 4, 4)
    assert vae.decode(z).shape == clips.shape
    assert latent_shape(16, 64) == (16, 4, 8, 8) == vae.latent_shape(16, 64)
    # each group of 4 frames is coded on its own (as Wan's VAE codes 4-frame chunks)
    other = clips.clone()
    other[:, :, 4:] = -1.0
    assert torch.equal(vae.encode(other)[:, :, 0], z[:, :, 0]) and not torch.equal(vae.encode(other)[:, :, 1], z[:, :, 1])


def test_bad_shapes_raise_clear_errors():
    vae = ToyVAE()
    with pytest.raises(InputError, match="multiples"):
        vae.encode(torch.zeros(1, 3, 8, 30, 30))
    with pytest.raises(InputError, match=r"\[B, 16, F, H, W\]"):
        vae.decode(torch.zeros(1, 192, 2, 8, 8))
    with pytest.raises(InputError, match="multiples"):
        latent_shape(6, 32)


def test_files_round_trip_and_other_files_are_refused(tmp_path):
    vae = ToyVAE(VAEConfig(width=16)).eval()
    with torch.no_grad():
        vae.latent_mean.fill_(0.5)
    path = save_vae(vae, tmp_path / "v.safetensors", {"what": "test"})
    back = load_vae(path)
    clips, _ = training_batch(1, seed=3)
    assert torch.equal(back.encode(clips), vae.encode(clips)) and back.cfg == vae.cfg
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a toy VAE"):
        load_vae(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="no toy VAE"):
        load_vae(tmp_path / "missing.safetensors")


def test_training_lowers_the_loss_and_sets_the_normalisation(tmp_path):
    out = train_vae(tmp_path / "vae.safetensors", VAETrainConfig(iterations=30, batch_size=4, save_every=10),
                    VAEConfig(width=16), progress=False)
    vae = load_vae(out)
    clips, _ = training_batch(64, seed=5, split="train")
    z = vae.encode(clips)  # normalised: per-channel mean ≈ 0, std ≈ 1 over the world
    assert z.transpose(0, 1).flatten(1).mean(1).abs().max() < 0.5
    assert (z.transpose(0, 1).flatten(1).std(1) - 1).abs().max() < 0.5
    assert not (tmp_path / "vae.trainstate.safetensors").exists()


def test_suggested_config_builds_a_wan_model_for_toy_latents():
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(**suggested_transformer_config(num_layers=1, dim=64, ffn_dim=64)).eval()
    z = torch.randn(2, *LATENT_SHAPE)
    context = ToyTextEncoder().encode(["a red circle moving left fast", ""])
    with torch.no_grad():
        out = model(z, torch.tensor([500.0, 10.0]), context, return_dict=False)[0]
    assert out.shape == z.shape
    assert model.config.patch_size == (1, 1, 1)  # 32 tokens of 16 values for a width of 64-128
