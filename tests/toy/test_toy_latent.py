import pytest
import torch

from tmd_core.errors import InputError
from tmd_core.toy.latent import LatentFormat, latent_to_pixels, pixels_to_latent, suggested_transformer_config
from tmd_core.toy.text import ToyTextEncoder
from tmd_core.toy.world import training_batch


def test_space_to_depth_is_lossless_and_keeps_pixel_meaning():
    clips, _ = training_batch(2, seed=0)
    lat = pixels_to_latent(clips)
    assert lat.shape == (2, 192, 2, 8, 8)
    assert torch.equal(latent_to_pixels(lat), clips)
    # channel (rgb c, frame k, row i, column j) of latent pixel (f, y, x) is pixel (4y + i, 4x + j) of frame 4f + k
    assert torch.equal(lat[:, 1 * 64 + 2 * 16 + 2 * 4 + 3, 1, 5, 6], clips[:, 1, 4 + 2, 22, 27])
    fmt = LatentFormat(spatial=2, temporal=2)
    assert fmt.latent_shape() == (24, 4, 16, 16)
    assert torch.equal(fmt.latent_to_pixels(fmt.pixels_to_latent(clips)), clips)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(InputError, match="multiples"):
        pixels_to_latent(torch.zeros(1, 3, 8, 30, 30))
    with pytest.raises(InputError, match=r"\[B, 192, F, H, W\]"):
        latent_to_pixels(torch.zeros(1, 16, 8, 8, 8))


def test_suggested_config_builds_a_wan_model_for_toy_latents():
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(**suggested_transformer_config(num_layers=1, dim=64, ffn_dim=64)).eval()
    clips, prompts = training_batch(2, seed=1)
    context = ToyTextEncoder().encode([p.text for p in prompts])
    with torch.no_grad():
        out = model(pixels_to_latent(clips), torch.tensor([500.0, 10.0]), context, return_dict=False)[0]
    assert out.shape == (2, 192, 2, 8, 8)
