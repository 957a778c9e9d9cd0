"""Run by ComfyUI's Python (tests/integration/test_patch_comfy_lora.py): merge a TMD patch's LoRA part into a Wan
state dict with ComfyUI's own LoRA code (comfy.lora: the key map LoraLoaderModelOnly uses, load_lora,
calculate_weight), and report which file keys it did not take.

    python comfy_lora_merge.py PATCH BASE OUT    # BASE: original-layout Wan keys; OUT: the merged weights + report
"""

import json
import logging
import sys
from types import SimpleNamespace


def main(patch: str, base: str, out: str) -> None:
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.lora
    from safetensors.torch import load_file, save_file

    sd = {"diffusion_model." + k: v for k, v in load_file(base).items()}
    model = SimpleNamespace(state_dict=lambda: sd, model_config=SimpleNamespace(unet_config={}))
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    missed = []

    class Catch(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if msg.startswith("lora key not loaded: "):
                missed.append(msg.removeprefix("lora key not loaded: "))

    logging.getLogger().addHandler(Catch())
    patches = comfy.lora.load_lora(load_file(patch), key_map)
    merged = {k: comfy.lora.calculate_weight([(1.0, v, 1.0, None, None)], sd[k].clone().float(), k)
              for k, v in patches.items()}
    save_file({k.removeprefix("diffusion_model."): v.contiguous() for k, v in merged.items()}, out,
              metadata={"report": json.dumps({"not_loaded": missed, "patched": len(merged)})})


if __name__ == "__main__":
    main(*sys.argv[1:4])
