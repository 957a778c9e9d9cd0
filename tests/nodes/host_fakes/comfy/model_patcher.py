"""Stand-in for `comfy.model_patcher.ModelPatcher`: holds a module and its devices; clone() shares the module;
model_state_dict() is the module's unpatched state dict (optionally only the keys under a prefix), get_key_patches()
pairs each weight with its patches; get_key_weight() finds a weight and its layer's set_/convert_ functions."""

import copy


def get_key_weight(model, key):
    """(weight, set_func, convert_func) of `key` ("a.b.weight"), as ComfyUI 0.3.64's: the layer's `set_<name>` and
    `convert_<name>` methods when it has them (scaled fp8 layers), else None."""
    op_keys = key.rsplit(".", 1)
    obj = model
    if len(op_keys) < 2:
        for part in key.split("."):
            obj = getattr(obj, part)
        return obj, None, None
    for part in op_keys[0].split("."):
        obj = getattr(obj, part)
    return getattr(obj, op_keys[1]), getattr(obj, "set_" + op_keys[1], None), getattr(obj, "convert_" + op_keys[1], None)


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.size = size
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.weight_inplace_update = weight_inplace_update
        self.patches = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.parent = None

    def model_size(self):
        if self.size > 0:
            return self.size
        self.size = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        return self.size

    def clone(self):
        n = self.__class__(
            self.model, self.load_device, self.offload_device, self.size, self.weight_inplace_update
        )
        n.patches = {k: v[:] for k, v in self.patches.items()}
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        n.parent = self
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def get_model_object(self, name):
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def get_key_patches(self, filter_prefix=None):
        """Per key: [(unpatched weight, convert_func)] + its patches (the real one reads the backup of a loaded,
        patched model; this stand-in never patches its module)."""
        return {k: [(w, lambda a, **kwargs: a)] + self.patches.get(k, [])
                for k, w in self.model_state_dict(filter_prefix).items()}

    def model_state_dict(self, filter_prefix=None):
        sd = self.model.state_dict()
        if filter_prefix is not None:
            sd = {k: v for k, v in sd.items() if k.startswith(filter_prefix)}
        return sd
