"""The ComfyUI nodes of the TMD pack: the only package that touches the host (docs/design.md §1).

Nodes use ComfyUI's V3 schema (`comfy_api.latest.io.ComfyNode`, docs/host.md §2) and are registered through
`comfy_entrypoint`; their ids, input names, types, defaults and output order are those of the V1 nodes they
replace, so saved workflows load unchanged.
"""

from comfy_api.latest import ComfyExtension, io

from . import host, routes
from .distill import TMDDistill
from .loader import TMDCheckpointInfo, TMDModelLoader
from .native import TMDApplyToModel
from .sampler import TMDSampler
from .schedule import TMDSchedule
from .toy import TMDToyDecode, TMDToyEmptyLatent, TMDToyTextEncode

host.register_model_folder()
routes.register_routes()  # GET /tmd/checkpoint_info for the web extension's NFE line

NODES: list[type[io.ComfyNode]] = [
    TMDModelLoader,
    TMDSchedule,
    TMDSampler,
    TMDCheckpointInfo,
    TMDDistill,
    TMDToyTextEncode,
    TMDToyEmptyLatent,
    TMDToyDecode,
    TMDApplyToModel,
]


class TMDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> TMDExtension:
    """What ComfyUI calls for a pack without NODE_CLASS_MAPPINGS (nodes.py: load_custom_node)."""
    return TMDExtension()
