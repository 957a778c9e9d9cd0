"""Where the real-host tests find things: the repo, the server starter, a free port; stopping the server."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# the pack's folder name inside custom_nodes; its web files are served at /extensions/comfyui-tmd/
PACK_FOLDER = "comfyui-tmd"


def run_script() -> Path:
    """shared/scripts/run_comfyui.sh beside the repo (CI layout), else the repo's copy."""
    shared = REPO.parent / "shared" / "scripts" / "run_comfyui.sh"
    return shared if shared.is_file() else REPO / "scripts" / "run_comfyui.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(pid: int, wait_s: float = 10.0) -> None:
    """SIGTERM (enough for ComfyUI), SIGKILL if it is still there after `wait_s`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
