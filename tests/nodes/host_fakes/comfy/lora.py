"""Stand-in for `comfy.lora` (ComfyUI 0.3.64): the generic key map of `model_lora_keys_unet`, and `load_lora` /
`calculate_weight` for the patch kinds the pack makes or tests with: LoRA factors (`lora_up`/`lora_down` and
`lora_A`/`lora_B`, optional `.alpha`) as a `LoRAAdapter`, `.diff` and `.diff_b` as `("diff", (tensor,))`. The
real module also knows LoHa, LoKr, DoRA, Tucker mid weights, weight padding, and the other models' key maps; a
file of those kinds is not loaded here. Faithful for what it does (same keys, same arithmetic: W + strength ·
alpha / r · up @ down in float32, cast back), and checked against the real module in tests/integration."""

from __future__ import annotations

import logging

import torch


class LoRAAdapter:
    """`comfy.weight_adapter.lora.LoRAAdapter`: `weights` = (up, down, alpha, mid, dora_scale, reshape)."""

    name = "lora"

    def __init__(self, loaded_keys, weights):
        self.loaded_keys = loaded_keys
        self.weights = weights

    @classmethod
    def load(cls, x, lora, alpha, dora_scale, loaded_keys=None):
        if loaded_keys is None:
            loaded_keys = set()
        for up, down in ((".lora_up.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_A.weight")):
            if x + up in lora:
                loaded_keys.update((x + up, x + down))
                return cls(loaded_keys, (lora[x + up], lora[x + down], alpha, None, dora_scale, None))
        return None

    def calculate_weight(self, weight, key, strength, strength_model, offset, function, intermediate_dtype=torch.float32,
                         original_weight=None):
        up, down, alpha = self.weights[0], self.weights[1], self.weights[2]
        mat1, mat2 = up.to(weight.device, intermediate_dtype), down.to(weight.device, intermediate_dtype)
        scale = alpha / mat2.shape[0] if alpha is not None else 1.0
        diff = torch.mm(mat1.flatten(start_dim=1), mat2.flatten(start_dim=1)).reshape(weight.shape)
        weight += function(((strength * scale) * diff).type(weight.dtype))
        return weight


def load_lora(lora, to_load, log_missing=True):
    patch_dict, loaded_keys = {}, set()
    for x in to_load:
        alpha = lora[x + ".alpha"].item() if x + ".alpha" in lora else None
        if alpha is not None:
            loaded_keys.add(x + ".alpha")
        adapter = LoRAAdapter.load(x, lora, alpha, None, loaded_keys)
        if adapter is not None:
            patch_dict[to_load[x]] = adapter
            loaded_keys.update(adapter.loaded_keys)
        if x + ".diff" in lora:
            patch_dict[to_load[x]] = ("diff", (lora[x + ".diff"],))
            loaded_keys.add(x + ".diff")
        if x + ".diff_b" in lora:
            patch_dict["{}.bias".format(to_load[x][: -len(".weight")])] = ("diff", (lora[x + ".diff_b"],))
            loaded_keys.add(x + ".diff_b")
    if log_missing:
        for x in lora.keys():
            if x not in loaded_keys:
                logging.warning(f"lora key not loaded: {x}")
    return patch_dict


def model_lora_keys_unet(model, key_map={}):  # noqa: B006 — the real signature
    for k in model.state_dict().keys():
        if k.startswith("diffusion_model."):
            if k.endswith(".weight"):
                key_map["lora_unet_{}".format(k[len("diffusion_model."): -len(".weight")].replace(".", "_"))] = k
                key_map[k[: -len(".weight")]] = k
            else:
                key_map[k] = k
    return key_map


def calculate_weight(patches, weight, key, intermediate_dtype=torch.float32, original_weights=None):
    for strength, v, strength_model, offset, function in patches:
        function = function if function is not None else (lambda a: a)
        if offset is not None:
            raise NotImplementedError("the stand-in does not apply offset patches")
        if strength_model != 1.0:
            weight *= strength_model
        if isinstance(v, LoRAAdapter):
            weight = v.calculate_weight(weight, key, strength, strength_model, offset, function, intermediate_dtype,
                                        original_weights)
            continue
        kind, v = ("diff", v) if len(v) == 1 else v
        if kind != "diff":
            raise NotImplementedError(f"the stand-in applies diff patches only, got {kind!r}")
        if strength != 0.0 and v[0].shape == weight.shape:
            weight += function(strength * v[0].to(weight.device, weight.dtype))
        elif strength != 0.0:
            logging.warning(f"WARNING SHAPE MISMATCH {key} WEIGHT NOT MERGED {v[0].shape} != {weight.shape}")
    return weight
