"""`tmd comfy-run` against the real ComfyUI, with stock nodes only (the pack's own graphs come in part 2)."""

import json
import subprocess
import sys

from comfy_host import REPO
from PIL import Image

# EmptyImage -> ImageToMask -> MaskToImage -> SaveImage: cheap on CPU; channel "alpha" of an RGB image
# raises IndexError inside ImageToMask at run time (not at validation)
GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0xFF0000},
    },
    "2": {
        "class_type": "ImageToMask",
        "inputs": {"image": ["1", 0], "channel": "red"},
        "_meta": {"title": "Mask"},
    },
    "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "tmd_it/img"}},
}


def comfy_run(server, tmp_path, *args):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(GRAPH))
    cmd = [
        sys.executable,
        "-m",
        "tmd_core",
        "comfy-run",
        str(wf),
        "--server",
        server.url,
        "--timeout",
        "120",
        *args,
    ]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)


def test_comfy_run_downloads_the_outputs_with_overrides_applied(comfyui, tmp_path):
    out = tmp_path / "out"
    p = comfy_run(
        comfyui,
        tmp_path,
        "--set",
        "EmptyImage.width=40",
        "--set",
        "1.height=24",
        "--out",
        str(out),
        "--json",
        str(tmp_path / "s.json"),
    )
    assert p.returncode == 0, p.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    [f] = summary["outputs"]
    assert (f["node"], f["subfolder"], f["type"]) == ("4", "tmd_it", "output")
    local = out / "tmd_it" / f["filename"]
    assert summary["downloaded"] == [str(local)]
    with Image.open(local) as im:
        assert im.size == (40, 24)  # the --set overrides reached the server
        assert im.convert("L").getpixel((0, 0)) == 255  # red channel of pure red, as a mask image
    assert (comfyui.output_dir / "tmd_it" / f["filename"]).read_bytes() == local.read_bytes()
    assert "[4 SaveImage]" in p.stderr  # progress lines name node id and class


def test_comfy_run_reports_validation_errors_per_node_and_exits_1(comfyui, tmp_path):
    p = comfy_run(comfyui, tmp_path, "--set", "1.width=0", "--set", "Mask.channel=purple")
    assert p.returncode == 1
    assert "ComfyUI rejected the workflow: Prompt outputs failed validation" in p.stderr
    assert "node 1 (EmptyImage) input 'width': Value 0 smaller than min of 1" in p.stderr
    assert "node 2 (ImageToMask) input 'channel': Value not in list" in p.stderr


def test_comfy_run_reports_execution_errors_and_exits_1(comfyui, tmp_path):
    p = comfy_run(comfyui, tmp_path, "--set", "Mask.channel=alpha")
    assert p.returncode == 1
    assert "node 2 (ImageToMask) failed: IndexError: index 3 is out of bounds" in p.stderr
