"""ComfyUI entry point of the TMD node pack (Transition Matching Distillation for Wan2.1 video).

Registers nodes only when imported by ComfyUI, so tests and the CLI can import the pack anywhere. The nodes use
ComfyUI's V3 schema, registered through `comfy_entrypoint` (docs/host.md §1-2): the pack defines no
NODE_CLASS_MAPPINGS, which ComfyUI would read instead.
"""

import importlib.util

WEB_DIRECTORY = "./web"
MIN_COMFYUI = "0.3.64"  # the V3 schema (comfy_api.latest) the nodes are written and tested against

if importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None:
    if importlib.util.find_spec("comfy_api") is None or importlib.util.find_spec("comfy_api.latest") is None:
        raise ImportError(f"the TMD nodes need ComfyUI {MIN_COMFYUI} or later (V3 node schema, comfy_api.latest): "
                          "update ComfyUI")
    from .nodes import comfy_entrypoint  # noqa: F401
