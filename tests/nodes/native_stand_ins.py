"""Stand-ins for the two host classes TMDApplyToModel checks (comfy.model_base.WAN21 and
comfy.ldm.wan.model.WanModel, empty but for the attributes the pack reads) and a MODEL built on them. Used by
tests/nodes/test_native.py and the node rows of tests/bad_inputs.py; the real classes are exercised in
tests/integration/test_native_model.py and test_native_patch.py."""

from __future__ import annotations

import contextlib
import sys
import types
from types import SimpleNamespace
from unittest import mock

import torch

from tmd_core.layouts import diffusers_to_original_state_dict


class WAN21:  # stand-in for comfy.model_base.WAN21
    def __init__(self, wan, sd=None):
        self.diffusion_model = wan
        self.manual_cast_dtype = None
        self.model_config = SimpleNamespace(unet_config={})
        self._sd = sd or {}

    def state_dict(self):
        return dict(self._sd)

    def get_dtype(self):
        return torch.float32


class WanModel:  # stand-in for comfy.ldm.wan.model.WanModel: the attributes the pack reads
    def __init__(self, dim=32, num_layers=4, ffn_dim=64, in_dim=4, out_dim=4, text_dim=24, freq_dim=32,
                 model_type="t2v"):
        self.__dict__.update(locals())


@contextlib.contextmanager
def wan_host():
    """comfy.ldm.wan.model and comfy.model_base holding the stand-ins, in sys.modules and on the comfy package."""
    import comfy

    ldm, wan_pkg = types.ModuleType("comfy.ldm"), types.ModuleType("comfy.ldm.wan")
    model_mod, base_mod = types.ModuleType("comfy.ldm.wan.model"), types.ModuleType("comfy.model_base")
    model_mod.WanModel, base_mod.WAN21 = WanModel, WAN21
    ldm.wan, wan_pkg.model = wan_pkg, model_mod
    modules = {"comfy.ldm": ldm, "comfy.ldm.wan": wan_pkg, "comfy.ldm.wan.model": model_mod,
               "comfy.model_base": base_mod}
    saved = {name: sys.modules.get(name) for name in modules}  # only these keys (patch.dict would restore all)
    sys.modules.update(modules)
    try:
        with mock.patch.object(comfy, "ldm", ldm, create=True), \
                mock.patch.object(comfy, "model_base", base_mod, create=True):
            yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def fake_model(teacher, **arch):
    """A MODEL whose base weights are `teacher`'s in ComfyUI's names (get_key_patches as ModelPatcher has it,
    `model.state_dict()` as WAN21's), with WanModel attributes `arch` (defaults: make_tiny_teacher's)."""
    sd = diffusers_to_original_state_dict(teacher.state_dict(), prefix="diffusion_model.")

    def get_key_patches(prefix=None):
        return {k: [(v, lambda a, **kw: a)] for k, v in sd.items() if prefix is None or k.startswith(prefix)}

    return SimpleNamespace(model=WAN21(WanModel(**arch), sd), get_key_patches=get_key_patches)
