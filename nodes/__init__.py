"""The ComfyUI nodes of the TMD pack: the only package that touches the host (docs/design.md §1)."""

from . import host, routes
from .distill import TMDDistill
from .loader import TMDCheckpointInfo, TMDModelLoader
from .native import TMDApplyToModel
from .sampler import TMDSampler
from .schedule import TMDSchedule
from .toy import TMDToyDecode, TMDToyEmptyLatent, TMDToyTextEncode

host.register_model_folder()
routes.register_routes()  # GET /tmd/checkpoint_info for the web extension's NFE line

NODE_CLASS_MAPPINGS = {
    "TMDModelLoader": TMDModelLoader,
    "TMDSchedule": TMDSchedule,
    "TMDSampler": TMDSampler,
    "TMDCheckpointInfo": TMDCheckpointInfo,
    "TMDDistill": TMDDistill,
    "TMDToyTextEncode": TMDToyTextEncode,
    "TMDToyEmptyLatent": TMDToyEmptyLatent,
    "TMDToyDecode": TMDToyDecode,
    "TMDApplyToModel": TMDApplyToModel,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "TMDModelLoader": "TMD Model Loader",
    "TMDSchedule": "TMD Schedule",
    "TMDSampler": "TMD Sampler",
    "TMDCheckpointInfo": "TMD Checkpoint Info",
    "TMDDistill": "TMD Distill (train from teacher)",
    "TMDToyTextEncode": "TMD Toy Text Encode",
    "TMDToyEmptyLatent": "TMD Toy Empty Latent",
    "TMDToyDecode": "TMD Toy Decode",
    "TMDApplyToModel": "TMD Apply to MODEL (native)",
}
