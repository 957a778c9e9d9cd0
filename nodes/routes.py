"""HTTP route of the pack: what a checkpoint in the loader's menu holds, read from its header only.

`GET /tmd/checkpoint_info?ckpt_name=<menu entry>` answers {"tmd_info": [{"ckpt_name", "kind", "head_blocks",
"num_layers"}]} (the shape of TMDModelLoader's `ui` report), or 400 {"error": ...} for a name that is not in the
menu, escapes its model folder, or is no readable checkpoint. The web extension asks it whenever the loader's
`ckpt_name` changes, so the NFE line shows the real H/L before the loader has run and after a cached run.
"""

from __future__ import annotations

import logging

from ..tmd_core.errors import InputError, TMDError
from ..tmd_core.loading import describe_checkpoint
from . import host

log = logging.getLogger(__name__)
ROUTE = "/tmd/checkpoint_info"


def checkpoint_info(ckpt_name: str) -> dict:
    """The loader's `tmd_info` for a menu entry, from the file's header (no weights are read)."""
    if ckpt_name not in host.checkpoint_choices():
        raise InputError(f"{ckpt_name!r} is not in the TMD loader's menu")
    info = describe_checkpoint(host.resolve_checkpoint(ckpt_name))
    # a TMD patch carries its split too (TMDApplyToModel applies it); anything else is split on load with the widget's H
    kind = {"tmd": "tmd", "tmd-patch": "patch"}.get(info["kind"], "teacher")
    return {"ckpt_name": ckpt_name, "kind": kind, "num_layers": info.get("num_layers"),
            "head_blocks": info.get("head_blocks") if kind != "teacher" else None}


def register_routes() -> bool:
    """Adds the route to the running ComfyUI server; False (and nothing added) without one (tests, CLI)."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return False
    if getattr(PromptServer, "instance", None) is None:
        return False

    @PromptServer.instance.routes.get(ROUTE)
    async def _checkpoint_info(request):
        name = request.query.get("ckpt_name", "")
        try:
            return web.json_response({"tmd_info": [checkpoint_info(name)]})
        except (TMDError, OSError, ValueError) as e:
            log.info("TMD: %s %r: %s", ROUTE, name, e)
            return web.json_response({"error": str(e)}, status=400)

    return True
