"""The bundled toy workflow (workflows/api/toy_tmd.json) on the real ComfyUI, unchanged: nothing but the pack's files.

Its loader names `toy/toy_tmd.safetensors`, the toy student shipped in tmd_core/toy/assets. Until that asset is
installed, a random toy-shaped student stands in under the same name in the server's models/tmd/toy/ folder
(a model-folder file wins over the asset; host_models.write_toy_student).
"""

import json
import subprocess
import sys

import pytest
import torch
from comfy_host import REPO
from host_models import write_toy_student
from safetensors.torch import load_file

import tmd_core
from tmd_core.comfy_client import ComfyClient, output_files
from tmd_core.toy.codec import decode_latents
from tmd_core.toy.text import ToyTextEncoder

WORKFLOW = REPO / "workflows" / "api" / "toy_tmd.json"


def node_id(prompt: dict, class_type: str) -> str:
    [nid] = [k for k, v in prompt.items() if v["class_type"] == class_type]
    return nid


@pytest.fixture(scope="module")
def toy_student(comfyui):
    return write_toy_student(comfyui.models_dir)


def read_video(path):
    import imageio_ffmpeg

    frames = imageio_ffmpeg.read_frames(str(path))
    meta = next(frames)
    w, h = meta["size"]
    return meta, [torch.frombuffer(bytearray(f), dtype=torch.uint8).reshape(h, w, 3) for f in frames]


def expected(student_path, text: str, seed: int, batch: int = 1):
    """(latent, frames [B*8, 256, 256, 3] in [0, 1]) of the library for the workflow's settings."""
    x0 = tmd_core.sample_tmd(tmd_core.load_tmd(student_path), tmd_core.make_noise((batch, 16, 2, 4, 4), seed=seed),
                             ToyTextEncoder().encode([text]), tmd_core.TMDSchedule(outer_steps=2, inner_steps=2, outer_shift=3.0, inner_shift=3.0))  # fmt: skip
    clips = decode_latents(x0)  # [B, 3, 8, 32, 32]
    frames = clips.permute(0, 2, 3, 4, 1).reshape(-1, 32, 32, 3).repeat_interleave(8, 1).repeat_interleave(8, 2)
    return x0, (frames + 1) / 2


def test_toy_workflow_saves_the_video_of_the_library_sample(comfyui, toy_student):
    prompt = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    sampler = node_id(prompt, "TMDSampler")
    prompt["100"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0], "filename_prefix": "tmd_it/toy"}}
    progress = []
    entry = ComfyClient(comfyui.url).run(prompt, on_progress=progress.append, timeout=600)

    files = {f["node"]: f for f in output_files(entry)}
    video = files[node_id(prompt, "SaveVideo")]
    assert (video["subfolder"], video["type"]) == ("video", "output") and video["filename"].startswith("toy_tmd")
    meta, frames = read_video(comfyui.output_dir / "video" / video["filename"])
    assert tuple(meta["size"]) == (256, 256) and len(frames) == 8 and meta["fps"] == 8  # 8 frames x scale 8
    assert [(p.value, p.max) for p in progress if p.node == sampler and p.value is not None][-1] == (4, 4)

    text = prompt[node_id(prompt, "TMDToyTextEncode")]["inputs"]["text"]
    x0, images = expected(toy_student, text, seed=prompt[sampler]["inputs"]["seed"])
    latent = load_file(str(comfyui.output_dir / "tmd_it" / files["100"]["filename"]))["latent_tensor"]
    # toy latents pass the sampler unnormalised; the shipped bf16 student computes in bf16 (the server's torch differs)
    atol = 1e-4 if tmd_core.read_tmd_info(toy_student)["dtypes"] == ["F32"] else 5e-2
    torch.testing.assert_close(latent, x0, rtol=0, atol=atol)
    got = torch.stack(frames).float() / 255
    error = (got - images).abs().mean()
    other = (got - expected(toy_student, text, seed=1)[1]).abs().mean()
    assert error < 0.03 and other > 2 * error  # H.264 is lossy: close to this seed's frames, not another's


def test_comfy_run_downloads_the_toy_video(comfyui, toy_student, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tmd_core", "comfy-run", str(WORKFLOW), "--server", comfyui.url, "--timeout", "300",
           "--set", "TMDSampler.seed=3", "--set", "SaveVideo.filename_prefix=tmd_it/toy_run", "--out", str(out),
           "--json", str(tmp_path / "s.json")]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    [f] = summary["outputs"]
    local = out / "tmd_it" / f["filename"]
    assert summary["downloaded"] == [str(local)] and f["filename"].endswith(".mp4")
    assert local.read_bytes() == (comfyui.output_dir / "tmd_it" / f["filename"]).read_bytes()
    assert "[5 TMDSampler] 4/4 (100%)" in p.stderr
    meta, frames = read_video(local)
    assert len(frames) == 8 and tuple(meta["size"]) == (256, 256)
