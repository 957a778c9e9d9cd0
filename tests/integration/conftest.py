"""Real-host tests: a real ComfyUI (COMFYUI_PATH, with its venv from scripts/setup_comfyui.sh) runs this pack.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout. One server per session, started with
shared/scripts/run_comfyui.sh (beside the repo) or the repo's copy scripts/run_comfyui.sh, on a free
port, with its own output folder; it is stopped (SIGTERM, then SIGKILL) at the end of the session.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from comfy_host import PACK_FOLDER, REPO, free_port, run_script, stop


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory):
    """A running ComfyUI with this pack: namespace(url, pid, log (Path), output_dir (Path), comfy_path)."""
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        pytest.skip(
            "COMFYUI_PATH is not set: real-host tests need a ComfyUI checkout (see scripts/setup_comfyui.sh)"
        )
    root = tmp_path_factory.mktemp("comfyui")
    packs = root / "custom_nodes"
    packs.mkdir()
    (packs / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    out, log = root / "output", root / "server.log"
    cmd = [
        "bash",
        str(run_script()),
        "-p",
        str(free_port()),
        "-o",
        str(out),
        "-l",
        str(log),
        "-t",
        "240",
        str(packs),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COMFYUI_PATH": comfy_path})
    if proc.returncode != 0:
        pytest.fail(f"ComfyUI did not start ({' '.join(cmd)}):\n{proc.stdout}\n{proc.stderr}")
    info = dict(
        line.split("=", 1)
        for line in proc.stdout.splitlines()
        if "=" in line and line.split("=")[0].isupper()
    )
    server = SimpleNamespace(
        url=info["URL"],
        pid=int(info["PID"]),
        log=Path(info["LOG"]),
        output_dir=out,
        comfy_path=Path(comfy_path),
    )
    yield server
    stop(server.pid)
