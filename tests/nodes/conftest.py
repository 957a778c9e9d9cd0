"""Tests of the pack's nodes/ without ComfyUI: the host modules they touch are stand-ins (host_fakes/).

The stand-ins are put into sys.modules once, before any node module is imported, under their real
names (`folder_paths`, `comfy.utils`, `comfy.model_management`, `comfy.model_patcher`,
`comfy.latent_formats`, `latent_preview`), and reset before every test. Fixtures:
  host   the stand-in modules + what they recorded (progress updates, model loads) + `interrupt()`
  pack   the repo root imported as the package `comfyui_tmd` (as ComfyUI imports a pack folder)
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
    """Fresh host state for each test; `host.progress` lists (value, total, node_id) of every ProgressBar update."""
    fp, utils, mm = MODULES["folder_paths"], MODULES["comfy.utils"], MODULES["comfy.model_management"]
    fp._reset(tmp_path / "comfyui")
    utils._reset()
    mm._reset()
    progress = []

    def hook(value, total, preview, node_id=None):  # what ComfyUI's main.py installs
        mm.throw_exception_if_processing_interrupted()
        progress.append((value, total, node_id))

    utils.set_progress_bar_global_hook(hook)
    yield SimpleNamespace(
        folder_paths=fp,
        utils=utils,
        model_management=mm,
        model_patcher=MODULES["comfy.model_patcher"],
        latent_formats=MODULES["comfy.latent_formats"],
        latent_preview=MODULES["latent_preview"],
        progress=progress,
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
