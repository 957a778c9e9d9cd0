"""The ComfyUI nodes of the TMD pack: the only package that touches the host (DESIGN.md)."""

from . import host
from .loader import TMDCheckpointInfo, TMDModelLoader
from .sampler import TMDSampler
from .schedule import TMDSchedule

host.register_model_folder()

NODE_CLASS_MAPPINGS = {
    "TMDModelLoader": TMDModelLoader,
    "TMDSchedule": TMDSchedule,
    "TMDSampler": TMDSampler,
    "TMDCheckpointInfo": TMDCheckpointInfo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "TMDModelLoader": "TMD Model Loader",
    "TMDSchedule": "TMD Schedule",
    "TMDSampler": "TMD Sampler",
    "TMDCheckpointInfo": "TMD Checkpoint Info",
}
