"""Real-host tests: a real ComfyUI (COMFYUI_PATH, with its venv from scripts/setup_comfyui.sh) runs this pack.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout. One server per session, started with
shared/scripts/run_comfyui.sh (beside the repo) or the repo's copy scripts/run_comfyui.sh, on a free
port, with its own output, user and model folders (models searched first; host_models.py), next
to the pack a test-only pack with `TMDTestConditioning`; it is stopped (SIGTERM, then SIGKILL) at
the end of the session. `wan_models` writes the tiny Wan models into those folders on first use.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from comfy_host import PACK_FOLDER, REPO, free_port, run_script, stop
from host_models import VAE_NAME, write_model_paths, write_test_pack, write_wan_models, write_wan_vae


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory):
    """A running ComfyUI with this pack: namespace(url, pid, log, output_dir, models_dir, comfy_path) (Paths)."""
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        pytest.skip(
            "COMFYUI_PATH is not set: real-host tests need a ComfyUI checkout (see scripts/setup_comfyui.sh)"
        )
    root = tmp_path_factory.mktemp("comfyui")
    packs = root / "custom_nodes"
    packs.mkdir()
    (packs / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    write_test_pack(packs)
    model_paths = write_model_paths(root)
    user = root / "user"  # frontend settings and saved workflows: not the checkout's user/ folder
    user.mkdir()
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
        "--",
        "--extra-model-paths-config",
        str(model_paths),
        "--user-directory",
        str(user),
        "--database-url",
        "sqlite:///:memory:",
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
        models_dir=root / "models",
        comfy_path=Path(comfy_path),
    )
    yield server
    stop(server.pid)


@pytest.fixture(scope="session")
def wan_models(comfyui):
    """The tiny Wan files in the server's model folders: namespace(tmd, teacher, vae) of file names."""
    files = write_wan_models(comfyui.models_dir)
    write_wan_vae(comfyui.models_dir / "vae" / VAE_NAME, comfyui.comfy_path)
    return SimpleNamespace(tmd=files["tmd"].name, teacher=files["teacher"].name, vae=VAE_NAME)
