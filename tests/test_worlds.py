"""tmd_core.worlds: Wan2.1's latent normalisation equals ComfyUI's, and the latent shapes of both worlds."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tmd_core.errors import InputError
from tmd_core.worlds import (
    WAN21_LATENT_MEAN,
    WAN21_LATENT_STD,
    is_toy_teacher,
    is_wan21,
    latent_shape_for,
    wan21_from_vae_space,
    wan21_to_vae_space,
)

FAKE_LATENT_FORMATS = Path(__file__).parent / "nodes" / "host_fakes" / "comfy" / "latent_formats.py"


def comfy_wan21():
    """The stand-in of comfy.latent_formats.Wan21 (ComfyUI's values), loaded without putting `comfy` on sys.path."""
    spec = importlib.util.spec_from_file_location("_fake_comfy_latent_formats", FAKE_LATENT_FORMATS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Wan21()


def model(in_channels, text_dim, patch=(1, 2, 2)):
    return SimpleNamespace(config=SimpleNamespace(in_channels=in_channels, text_dim=text_dim, patch_size=patch))


def test_wan21_statistics_are_comfyuis():
    fmt = comfy_wan21()
    assert fmt.latents_mean.flatten().tolist() == torch.tensor(WAN21_LATENT_MEAN).tolist()
    assert fmt.latents_std.flatten().tolist() == torch.tensor(WAN21_LATENT_STD).tolist()


def test_vae_space_round_trip_matches_comfyuis_process_out():
    x = torch.randn(2, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    z = wan21_to_vae_space(x)
    assert torch.equal(z, comfy_wan21().process_out(x))  # what VAEDecode gets from TMDSampler
    torch.testing.assert_close(wan21_from_vae_space(z), x)
    with pytest.raises(InputError, match=r"Wan2.1 latents are \[B, 16, F, H, W\], got \[1, 4, 3, 4, 4\]"):
        wan21_to_vae_space(torch.zeros(1, 4, 3, 4, 4))


def test_worlds_and_their_latent_shapes():
    wan, toy = model(16, 4096), model(16, 32, patch=(1, 1, 1))
    assert is_wan21(wan) and not is_toy_teacher(wan)
    assert is_toy_teacher(toy) and not is_wan21(toy)
    assert not is_wan21(model(36, 4096))  # image-to-video inputs are not the t2v latent
    assert latent_shape_for(wan, 81, 480, 832) == (16, 21, 60, 104)  # as EmptyHunyuanLatentVideo
    assert latent_shape_for(toy, 8, 32, 32) == (16, 2, 4, 4)
    with pytest.raises(InputError, match="toy videos have a multiple of 4 frames"):
        latent_shape_for(toy, 9, 32, 32)
    with pytest.raises(InputError, match="positive multiples of 16"):
        latent_shape_for(wan, 81, 480, 840)
    with pytest.raises(InputError, match="36 latent channels"):
        latent_shape_for(model(36, 4096), 81, 480, 832)
