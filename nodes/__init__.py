"""The ComfyUI nodes of the TMD pack: the only package that touches the host (DESIGN.md)."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
