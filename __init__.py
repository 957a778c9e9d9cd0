"""ComfyUI entry point of the TMD node pack (Transition Matching Distillation for Wan2.1 video).

Registers nodes only when imported by ComfyUI, so tests and the CLI can import the pack anywhere.
"""

import importlib.util

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
WEB_DIRECTORY = "./web"

if importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F401

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
