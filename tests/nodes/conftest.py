"""Tests of the pack's nodes/ without ComfyUI: the host modules they touch are stand-ins (host_fakes/).

The stand-ins are put into sys.modules once, before any node module is imported, under their real
names (`folder_paths`, `comfy.utils`, `comfy.model_management`, `comfy.model_patcher`,
`comfy.latent_formats`, `comfy.lora`, `latent_preview`, `server`), and reset before every test. Fixtures:
  host   the stand-in modules + what they recorded (progress updates, model loads) + `interrupt()`
  pack   the repo root imported as the package `comfyui_tmd` (as ComfyUI imports a pack folder)
  nodes  the pack's `nodes` package with the `tmd` model folder registered in this test's host
         (the pack registers it once at import; `host` forgets it before every test), and its shipped
         toy checkpoints (tmd_core/toy/assets) replaced by an empty per-test folder
  toy_assets  that folder holding small random toy-world models: toy_teacher (diffusers file +
         config sidecar) and toy_tmd (its tmd/1 student, H = 1 of L = 2), like the shipped ones
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from comfy_fakes import MODULES, load_module

REPO = Path(__file__).resolve().parents[2]
PACK_NAME = "comfyui_tmd"


@pytest.fixture(autouse=True)
def host(tmp_path):
    """Fresh host state for each test; `host.progress` lists (value, total, node_id) of every ProgressBar update,
    `host.previews` (value, total, preview, node_id) of those that carry a preview image instead."""
    fp, utils, mm = MODULES["folder_paths"], MODULES["comfy.utils"], MODULES["comfy.model_management"]
    fp._reset(tmp_path / "comfyui")
    utils._reset()
    mm._reset()
    MODULES["server"]._reset()
    progress, previews = [], []

    def hook(value, total, preview, node_id=None):  # what ComfyUI's main.py installs
        mm.throw_exception_if_processing_interrupted()
        if preview is not None:
            previews.append((value, total, preview, node_id))
        else:
            progress.append((value, total, node_id))

    utils.set_progress_bar_global_hook(hook)
    yield SimpleNamespace(
        folder_paths=fp,
        utils=utils,
        model_management=mm,
        model_patcher=MODULES["comfy.model_patcher"],
        latent_formats=MODULES["comfy.latent_formats"],
        latent_preview=MODULES["latent_preview"],
        server=MODULES["server"].PromptServer.instance,  # .progress_texts: (node id, text) shown on nodes
        progress=progress,
        previews=previews,
        interrupt=mm.interrupt_current_processing,  # what POST /interrupt does
        models_dir=Path(fp.models_dir),
        output_dir=Path(fp.output_directory),
    )
    utils._reset()
    mm._reset()


@pytest.fixture(scope="session")
def pack():
    """The pack as ComfyUI imports it: the repo root as a package (relative imports inside work)."""
    if not (REPO / "__init__.py").is_file():
        pytest.skip("the pack's __init__.py is not written yet")
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    return load_module(PACK_NAME, REPO / "__init__.py", package=True)


@pytest.fixture
def nodes(pack, host, monkeypatch):
    """`comfyui_tmd.nodes` as ComfyUI sees it after loading the pack: models/tmd registered."""
    module = sys.modules[PACK_NAME + ".nodes"]
    module.host.register_model_folder()
    assets = host.models_dir.parent / "toy_assets"  # never the package's own (they may or may not be installed)
    assets.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(module.host, "TOY_ASSETS", assets)
    return module


def _tiny_toy(seed: int = 0):
    from helpers_wan import make_tiny_teacher

    return make_tiny_teacher(seed, in_channels=16, out_channels=16, text_dim=32, num_layers=2, patch_size=[1, 1, 1])


@pytest.fixture
def tiny_toy():
    """`tiny_toy(seed)`: a 2-layer Wan teacher in the toy world's formats (16 latent channels, patch 1, 32-wide text)."""
    return _tiny_toy


@pytest.fixture
def toy_assets(nodes):
    """The (per-test) toy asset folder: toy_teacher, toy_tmd (outer shift 3) and a small random toy_vae."""
    import torch
    from helpers_wan import save_diffusers_single

    import tmd_core
    from tmd_core.toy.autoencoder import ToyVAE, VAEConfig, save_vae

    folder = nodes.host.TOY_ASSETS
    torch.manual_seed(0)
    save_vae(ToyVAE(VAEConfig(width=16)).eval(), folder / "toy_vae.safetensors")
    teacher = _tiny_toy(3)
    save_diffusers_single(teacher, folder / "toy_teacher.safetensors", sidecar=True)
    student = tmd_core.TMDModel.from_teacher(teacher, head_blocks=1, outer_shift=3.0)
    tmd_core.save_tmd(student, folder / "toy_tmd.safetensors")
    return folder


def _tiny_wan16(seed: int = 0):
    from helpers_wan import make_tiny_teacher

    return make_tiny_teacher(seed, in_channels=16, out_channels=16)


@pytest.fixture
def tiny_wan16():
    """`tiny_wan16(seed)`: a 4-layer Wan teacher with Wan2.1's 16 latent channels (heads 2 x 16, text width 24)."""
    return _tiny_wan16


@pytest.fixture
def tmd_file(host):
    """models/tmd/student.safetensors: a tmd/1 student (H = 2 of L = 4) of `tiny_wan16()`."""
    import tmd_core

    path = host.models_dir / "tmd" / "student.safetensors"
    tmd_core.save_tmd(tmd_core.TMDModel.from_teacher(_tiny_wan16(), head_blocks=2), path)
    return path


@pytest.fixture
def teacher_file(host):
    """models/diffusion_models/wan/teacher.safetensors: `tiny_wan16(1)` in ComfyUI's layout (+ config sidecar)."""
    from helpers_wan import save_original_layout

    path = host.models_dir / "diffusion_models" / "wan" / "teacher.safetensors"
    save_original_layout(_tiny_wan16(1), path, prefix="model.diffusion_model.", sidecar=True)
    return path
