"""The stand-in host modules behave like ComfyUI 0.3.64 where nodes depend on it."""

import pytest
import torch


def test_progress_bar_reports_through_the_global_hook_and_clamps(host):
    import comfy.utils

    bar = comfy.utils.ProgressBar(4)
    bar.update(1)
    bar.update_absolute(3)
    bar.update(5)  # clamps at total
    assert host.progress == [(1, 4, None), (3, 4, None), (4, 4, None)]


def test_interrupt_lands_at_the_next_progress_update_and_clears(host):
    import comfy.model_management as mm
    import comfy.utils

    bar = comfy.utils.ProgressBar(3)
    host.interrupt()
    with pytest.raises(mm.InterruptProcessingException):
        bar.update(1)
    assert not mm.processing_interrupted()  # raising clears the flag, as in ComfyUI
    bar.update(1)
    assert host.progress == [(2, 3, None)]  # the bar had already counted the interrupted step


def test_folder_paths_model_folder_listing_and_lookup(host):
    import folder_paths

    tmd_dir = host.models_dir / "tmd"
    (tmd_dir / "sub").mkdir(parents=True)
    (tmd_dir / "a.safetensors").write_bytes(b"x")
    (tmd_dir / "sub" / "b.safetensors").write_bytes(b"x")
    (tmd_dir / "notes.txt").write_text("x")
    folder_paths.add_model_folder_path("tmd", str(tmd_dir))
    # a folder new to ComfyUI has no extension filter: every file is listed
    assert folder_paths.get_filename_list("tmd") == ["a.safetensors", "notes.txt", "sub/b.safetensors"]
    assert folder_paths.get_full_path("tmd", "sub/b.safetensors") == str(tmd_dir / "sub" / "b.safetensors")
    assert folder_paths.get_full_path("tmd", "missing.safetensors") is None
    with pytest.raises(FileNotFoundError, match="Model in folder 'tmd' with filename 'x' not found."):
        folder_paths.get_full_path_or_raise("tmd", "x")
    unet = host.models_dir / "unet"
    unet.mkdir()
    (unet / "wan.safetensors").write_bytes(b"x")
    (unet / "readme.md").write_text("x")
    assert folder_paths.get_filename_list("diffusion_models") == ["wan.safetensors"]
    assert folder_paths.get_filename_list("unet") == ["wan.safetensors"]  # legacy name


def test_save_path_counter_follows_existing_files(host):
    import folder_paths

    out = folder_paths.get_output_directory()
    assert folder_paths.get_save_image_path("tmd/clip", out)[:4] == (f"{out}/tmd", "clip", 1, "tmd")
    (host.output_dir / "tmd" / "clip_00007_.mp4").write_bytes(b"")
    assert folder_paths.get_save_image_path("tmd/clip", out)[2] == 8
    with pytest.raises(Exception, match="outside the output folder"):
        folder_paths.get_save_image_path("../escape", out)


def test_wan21_latent_format_round_trips_and_has_16_channels():
    from comfy.latent_formats import Wan21

    fmt = Wan21()
    x = torch.randn(1, 16, 2, 4, 4)
    assert fmt.latents_mean.shape == fmt.latents_std.shape == (1, 16, 1, 1, 1)
    assert torch.allclose(fmt.process_out(fmt.process_in(x)), x, atol=1e-6)
    assert torch.allclose(fmt.process_in(fmt.latents_mean.expand_as(x)), torch.zeros_like(x))


def test_model_patcher_clone_shares_the_module_and_load_moves_it(host):
    import comfy.model_management as mm
    from comfy.model_patcher import ModelPatcher

    net = torch.nn.Linear(2, 2)
    p = ModelPatcher(net, mm.get_torch_device(), mm.unet_offload_device())
    c = p.clone()
    c.model_options["transformer_options"]["x"] = 1
    assert c.model is net and c.is_clone(p) and p.model_options["transformer_options"] == {}
    assert p.model_size() == 6 * 4
    mm.load_models_gpu([c])
    assert host.model_management.loaded_calls == [[c]]


def test_prepare_callback_needs_a_latent_format_like_comfyui(host):
    import latent_preview
    from comfy.latent_formats import Wan21
    from comfy.model_patcher import ModelPatcher

    bare = ModelPatcher(torch.nn.Linear(2, 2), "cpu", "cpu")
    with pytest.raises(AttributeError, match="latent_format"):
        latent_preview.prepare_callback(bare, 4)
    net = torch.nn.Linear(2, 2)
    net.latent_format = Wan21()
    out = {}
    cb = latent_preview.prepare_callback(ModelPatcher(net, "cpu", "cpu"), 4, out)
    cb(0, "x0", "x", 4)
    assert out == {"x0": "x0"} and host.progress == [(1, 4, None)]
