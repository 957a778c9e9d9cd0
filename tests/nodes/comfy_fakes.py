"""Puts the host stand-ins (host_fakes/) into sys.modules under ComfyUI's module names, once per process.

Imported by tests/nodes/conftest.py before any node module, and by the real-host test that checks
the stand-ins against the real modules. `MODULES` maps module name -> stand-in module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

FAKES = Path(__file__).parent / "host_fakes"


def load_module(name: str, path: Path, package: bool = False):
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _install_fakes() -> dict:
    real = [
        m
        for m in ("comfy", "folder_paths", "latent_preview", "server")
        if m in sys.modules and not getattr(sys.modules[m], "__file__", "").startswith(str(FAKES))
    ]
    if real:
        raise RuntimeError(
            f"the real ComfyUI modules {real} are already imported: run tests/nodes in a process without ComfyUI"
        )
    mods = {"comfy": load_module("comfy", FAKES / "comfy" / "__init__.py", package=True)}
    mods["folder_paths"] = load_module("folder_paths", FAKES / "folder_paths.py")
    for name in ("comfy.utils", "comfy.model_management", "comfy.model_patcher", "comfy.latent_formats"):
        mods[name] = importlib.import_module(name)  # found through the stand-in comfy package's __path__
    mods["latent_preview"] = load_module("latent_preview", FAKES / "latent_preview.py")
    mods["server"] = load_module("server", FAKES / "server.py")
    return mods


MODULES = _install_fakes()
