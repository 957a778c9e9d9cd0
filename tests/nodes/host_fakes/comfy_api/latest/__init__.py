"""Stand-in for `comfy_api.latest` (ComfyUI 0.3.64): the V3 node schema `io` and `ComfyExtension`."""

from abc import ABC, abstractmethod

from . import _io as io


class ComfyExtension(ABC):
    async def on_load(self):  # noqa: B027 — optional, as in ComfyUI
        """Not called for custom node packs by ComfyUI 0.3.64 (nodes.py reads only get_node_list)."""

    @abstractmethod
    async def get_node_list(self):
        """The pack's node classes (io.ComfyNode subclasses)."""


__all__ = ["ComfyExtension", "io"]
