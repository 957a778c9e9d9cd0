"""Puts the host stand-ins (host_fakes/) into sys.modules under ComfyUI's module names, once per process.

Imported by tests/nodes/conftest.py before any node module, and by the real-host test that checks
the stand-ins against the real modules. `MODULES` maps module name -> stand-in module. `run_node` calls a
V3 node the way ComfyUI's executor does.
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
        for m in ("comfy", "comfy_api", "folder_paths", "latent_preview", "server")
        if m in sys.modules and not getattr(sys.modules[m], "__file__", "").startswith(str(FAKES))
    ]
    if real:
        raise RuntimeError(
            f"the real ComfyUI modules {real} are already imported: run tests/nodes in a process without ComfyUI"
        )
    mods = {"comfy": load_module("comfy", FAKES / "comfy" / "__init__.py", package=True)}
    mods["folder_paths"] = load_module("folder_paths", FAKES / "folder_paths.py")
    for name in ("comfy.utils", "comfy.model_management", "comfy.model_patcher", "comfy.latent_formats", "comfy.lora"):
        mods[name] = importlib.import_module(name)  # found through the stand-in comfy package's __path__
    mods["latent_preview"] = load_module("latent_preview", FAKES / "latent_preview.py")
    mods["server"] = load_module("server", FAKES / "server.py")
    mods["comfy_api"] = load_module("comfy_api", FAKES / "comfy_api" / "__init__.py", package=True)
    for name in ("comfy_api.latest", "comfy_api.latest._io"):
        mods[name] = importlib.import_module(name)
    return mods


def run_node(node_cls, *args, unique_id: str | None = None, **inputs):
    """`node_cls` run as ComfyUI 0.3.64's executor runs a V3 node (execution.py: `_async_map_node_over_list`):
    `execute` on a clone of the class that carries the hidden inputs, its return normalised to an io.NodeOutput."""
    io = MODULES["comfy_api.latest._io"]
    hidden = {io.Hidden.unique_id: unique_id} if unique_id is not None else {}
    return getattr(node_cls.PREPARE_CLASS_CLONE(hidden), node_cls.FUNCTION)(*args, **inputs)


MODULES = _install_fakes()
