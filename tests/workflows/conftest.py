"""Host-free checks of the bundled workflows (workflows/*.json, UI format; workflows/api/*.json, API format).

Node definitions come from two places, in the shape of ComfyUI's `GET /object_info`:
  native  object_info_native-0.3.64.json: the native nodes the workflows use, copied verbatim from a
          stock ComfyUI 0.3.64's /object_info (shared/comfyui/object_info-0.3.64.json); add a node
          there when a workflow starts using it
  pack    this pack's nodes, described the way ComfyUI's server.node_info does (V3 nodes: their schema's
          V1 description), loaded with the host stand-ins of tests/nodes (so no ComfyUI is needed); the
          stand-in's descriptions are compared with a real server's in tests/integration/test_host_fakes_match.py
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parents[1]
WORKFLOWS = REPO / "workflows"
NATIVE = HERE / "object_info_native-0.3.64.json"
PACK_NAME = "comfyui_tmd"

sys.path.insert(0, str(REPO / "tests" / "nodes"))
from comfy_fakes import MODULES, load_module  # noqa: E402 — installs the host stand-ins first

sys.path.pop(0)


def pack_nodes() -> dict:
    """node id -> class of the pack's nodes, registered as ComfyUI does (`comfy_entrypoint`, V3)."""
    pack = sys.modules.get(PACK_NAME) or load_module(PACK_NAME, REPO / "__init__.py", package=True)
    sys.modules[PACK_NAME + ".nodes"].host.register_model_folder()  # the menus list it (the pack registers it once)
    classes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    return {cls.GET_SCHEMA().node_id: cls for cls in classes}


def node_info(cls) -> dict:
    """server.node_info of a V3 node (ComfyUI 0.3.64), JSON round-tripped like the HTTP answer."""
    return json.loads(json.dumps(cls.GET_NODE_INFO_V1()))


@pytest.fixture(scope="session")
def pack_object_info(tmp_path_factory) -> dict:
    """The pack's nodes as /object_info lists them on a host with empty model folders."""
    MODULES["folder_paths"]._reset(tmp_path_factory.mktemp("comfyui"))
    return {k: node_info(cls) for k, cls in pack_nodes().items()}


@pytest.fixture(scope="session")
def native_object_info() -> dict:
    return json.loads(NATIVE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def object_info(native_object_info, pack_object_info) -> dict:
    assert not set(native_object_info) & set(pack_object_info), "a pack node id shadows a native node"
    return {**native_object_info, **pack_object_info}


@pytest.fixture(scope="session")
def converter():
    """scripts/workflow_to_api.py as a module (ui_to_api, input_specs, is_widget, WorkflowError)."""
    path = REPO / "scripts" / "workflow_to_api.py"
    spec = importlib.util.spec_from_file_location("workflow_to_api", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
