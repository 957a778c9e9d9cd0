"""The bundled workflows load in the real frontend (headless Chromium) with every node type known, and the
pack's V3 nodes take each saved widget value at the position the workflow gives it.

TMD_SCREENSHOT_DIR=<folder> keeps each workflow's screenshot there as <workflow>.png (docs/img/ holds one).
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from comfy_host import REPO

from tmd_core.loading import describe_checkpoint

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def screenshot():
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no chromium: apt-get install chromium")
    spec = importlib.util.spec_from_file_location(
        "screenshot_workflow", REPO / "scripts" / "screenshot_workflow.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.screenshot_workflow


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_loads_in_the_frontend_without_missing_nodes(comfyui, screenshot, workflow, tmp_path):
    ui = json.loads(workflow.read_text(encoding="utf-8"))
    report = screenshot(comfyui.url, workflow, tmp_path / "frontend.png", timeout=120)
    assert report["missing_node_types"] == []
    assert (report["nodes"], report["links"]) == (len(ui["nodes"]), len(ui["links"]))
    for node in ui["nodes"]:  # the frontend filled the pack's widgets from the saved values, unchanged
        if node["type"].startswith("TMD"):
            assert report["widgets_values"][str(node["id"])] == node["widgets_values"], (node["id"], node["type"])
    # no "Missing Node Types" dialog; the model files the workflow names are absent on the test server
    assert all("Missing Node" not in title for title in report["dialogs_after_load"]), report
    summaries = report["tmd_summaries"]  # drawn by web/tmd.js on TMDSchedule and TMDSampler
    assert {key.split()[1] for key in summaries} == {"TMDSchedule", "TMDSampler"}
    assert all(text.startswith("NFE 2.33") for text in summaries.values()), summaries  # 2 x 2, H/L = 1/6
    # H/L of the selected checkpoint, asked from GET /tmd/checkpoint_info before anything ran; the Wan
    # workflows name files absent on the test server, so their line keeps the loader widget's H and L = 30
    toy = describe_checkpoint(REPO / "tmd_core" / "toy" / "assets" / "toy_tmd.safetensors")
    hl = f"H{toy['head_blocks']}/L{toy['num_layers']}" if workflow.name == "toy_tmd.json" else "H5/L30"
    assert all(text.endswith(hl) for text in summaries.values()), summaries
    png = (tmp_path / "frontend.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a drawn page, not a blank one
    if os.environ.get("TMD_SCREENSHOT_DIR"):
        keep = Path(os.environ["TMD_SCREENSHOT_DIR"]) / f"{workflow.stem}.png"
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_bytes(png)
