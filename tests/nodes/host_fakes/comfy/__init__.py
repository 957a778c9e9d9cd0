"""Stand-in for ComfyUI's `comfy` package (see ../README.md); the submodules are the real names."""
