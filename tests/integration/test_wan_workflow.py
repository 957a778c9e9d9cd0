"""The bundled Wan workflow (workflows/api/wan21_t2v_1.3b_tmd.json) on the real ComfyUI, with tiny models.

The only change to the shipped graph: its CLIPTextEncode (umt5-xxl, too big for CPU tests) becomes the
test-only TMDTestConditioning with the same id and title, and the CLIPLoader goes (host_models.py).
Sizes, steps and file names are overridden the way a user would (`--set`, or the API inputs).
"""

import importlib.util
import json
import subprocess
import sys
import time

import pytest
import requests
import torch
from comfy_host import REPO
from host_models import TMD_NAME, stand_in_conditioning
from safetensors.torch import load_file

import tmd_core
from tmd_core.comfy_client import ComfyClient, ComfyRunError, output_files

WORKFLOW = REPO / "workflows" / "api" / "wan21_t2v_1.3b_tmd.json"
FAKE_FORMATS = REPO / "tests" / "nodes" / "host_fakes" / "comfy" / "latent_formats.py"


def node_id(prompt: dict, class_type: str) -> str:
    [nid] = [k for k, v in prompt.items() if v["class_type"] == class_type]
    return nid


def tiny_prompt(models, text, seed, width=32, height=32, length=5, outer=2, inner=2) -> dict:
    """The bundled API workflow on the tiny models, conditioning from TMDTestConditioning."""
    prompt = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    pos = node_id(prompt, "CLIPTextEncode")
    del prompt[prompt[pos]["inputs"]["clip"][0]]  # the CLIPLoader
    prompt[pos] = {"class_type": "TMDTestConditioning", "inputs": {"text": text, "tokens": 512, "width": 4096},
                   "_meta": prompt[pos]["_meta"]}  # fmt: skip
    settings = {
        "TMDModelLoader": {"ckpt_name": models.tmd},
        "VAELoader": {"vae_name": models.vae},
        "EmptyHunyuanLatentVideo": {"width": width, "height": height, "length": length},
        "TMDSchedule": {"outer_steps": outer, "inner_steps": inner},
        "TMDSampler": {"seed": seed},
    }
    for class_type, inputs in settings.items():
        prompt[node_id(prompt, class_type)]["inputs"].update(inputs)
    return prompt


def wan21_stats():
    """ComfyUI's Wan21 latent mean/std (the stand-in's copy, checked against the real one in test_host_fakes_match)."""
    spec = importlib.util.spec_from_file_location("tmd_wan21_stats", FAKE_FORMATS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fmt = module.Wan21()
    return fmt.latents_mean, fmt.latents_std


def read_video(path):
    import imageio_ffmpeg

    frames = imageio_ffmpeg.read_frames(str(path))
    meta = next(frames)
    return meta, list(frames)


def test_wan_workflow_saves_a_video_whose_latent_is_the_library_sample_denormalised(comfyui, wan_models):
    prompt = tiny_prompt(wan_models, "a red square moving left", seed=11)
    sampler = node_id(prompt, "TMDSampler")
    prompt["100"] = {
        "class_type": "SaveLatent",
        "inputs": {"samples": [sampler, 0], "filename_prefix": "tmd_it/latent"},
    }
    progress = []
    entry = ComfyClient(comfyui.url).run(prompt, on_progress=progress.append, timeout=600)

    files = {f["node"]: f for f in output_files(entry)}
    video = files[node_id(prompt, "SaveVideo")]
    assert (video["type"], video["subfolder"]) == ("output", "video") and video["filename"].endswith(".mp4")
    meta, frames = read_video(comfyui.output_dir / "video" / video["filename"])
    assert tuple(meta["size"]) == (32, 32) and len(frames) == 5  # 2 latent frames -> 1 + 4 video frames
    assert [(p.value, p.max) for p in progress if p.node == sampler and p.value is not None][-1] == (4, 4)

    latent = load_file(str(comfyui.output_dir / "tmd_it" / files["100"]["filename"]))["latent_tensor"]
    x0 = tmd_core.sample_tmd(
        tmd_core.load_tmd(comfyui.models_dir / "tmd" / TMD_NAME),
        tmd_core.make_noise((1, 16, 2, 4, 4), seed=11),
        stand_in_conditioning("a red square moving left"),
        tmd_core.TMDSchedule(outer_steps=2, inner_steps=2),
    )
    mean, std = wan21_stats()
    torch.testing.assert_close(latent, x0 * std + mean, rtol=1e-4, atol=1e-4)  # the server's torch may differ


def test_a_bad_input_is_rejected_at_queue_time_naming_the_input(comfyui, wan_models):
    prompt = tiny_prompt(wan_models, "x", seed=0, outer=0)
    r = requests.post(comfyui.url + "/prompt", json={"prompt": prompt}, timeout=60)
    assert r.status_code == 400
    body = r.json()
    schedule = node_id(prompt, "TMDSchedule")
    assert set(body["node_errors"]) == {schedule}
    [err] = body["node_errors"][schedule]["errors"]
    assert body["node_errors"][schedule]["class_type"] == "TMDSchedule"
    assert err["type"] == "value_smaller_than_min"
    assert err["extra_info"]["input_name"] == "outer_steps" and err["extra_info"]["received_value"] == 0


def test_interrupt_ends_a_long_sampling_run(comfyui, wan_models):
    prompt = tiny_prompt(
        wan_models, "a long run", seed=5, width=256, height=256, length=1, outer=50, inner=32
    )
    sampler = node_id(prompt, "TMDSampler")
    client = ComfyClient(comfyui.url)
    seen = []

    def on_progress(p):
        if p.node == sampler and p.value is not None and not seen:
            seen.append((p.value, p.max, time.monotonic()))
            requests.post(comfyui.url + "/interrupt", timeout=30)

    with pytest.raises(ComfyRunError, match=f"was interrupted at node {sampler} \\(TMDSampler\\)"):
        client.run(prompt, on_progress=on_progress, timeout=600)
    ended = time.monotonic()
    [(value, total, t_interrupt)] = seen
    assert total == 50 * 32 and value < total
    assert ended - t_interrupt < 30  # a head step is milliseconds; the full run would take minutes
    deadline = time.monotonic() + 30  # the entry is stored just after `execution_interrupted` is sent: poll
    while True:
        history = requests.get(comfyui.url + "/history", timeout=30).json()
        found = [e for e in history.values() if e["prompt"][2] == prompt]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    [entry] = found
    status = entry["status"]
    assert status["status_str"] == "error" and not status["completed"]
    interrupted = [d for kind, d in status["messages"] if kind == "execution_interrupted"]
    assert [(d["node_id"], d["node_type"]) for d in interrupted] == [(sampler, "TMDSampler")]
    assert output_files(entry) == []  # nothing saved; only the loader's tmd_info is there


def test_comfy_run_queues_the_wan_workflow_with_overrides_and_downloads_the_video(
    comfyui, wan_models, tmp_path
):
    wf = tmp_path / "wan_tiny.json"
    wf.write_text(json.dumps(tiny_prompt(wan_models, "placeholder", seed=0)))
    out = tmp_path / "out"
    sets = ["EmptyHunyuanLatentVideo.length=1", "TMDSchedule.outer_steps=1", "6.seed=3",
            "Positive prompt.text=a blue circle moving up", "SaveVideo.filename_prefix=tmd_it/run"]  # fmt: skip
    cmd = [sys.executable, "-m", "tmd_core", "comfy-run", str(wf), "--server", comfyui.url, "--timeout", "300",
           "--out", str(out), "--json", str(tmp_path / "s.json")]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    [f] = summary["outputs"]
    assert (f["node"], f["subfolder"], f["type"]) == ("10", "tmd_it", "output")
    local = out / "tmd_it" / f["filename"]
    assert summary["downloaded"] == [str(local)]
    assert local.read_bytes() == (comfyui.output_dir / "tmd_it" / f["filename"]).read_bytes()
    meta, frames = read_video(local)
    assert tuple(meta["size"]) == (32, 32) and len(frames) == 1  # the length override reached the server
    history = requests.get(comfyui.url + "/history", timeout=30).json()
    queued = [e["prompt"][2] for e in history.values() if "10" in e["outputs"]]
    ran = [q for q in queued if q["10"]["inputs"]["filename_prefix"] == "tmd_it/run"]
    assert [q["3"]["inputs"]["text"] for q in ran] == ["a blue circle moving up"]
    assert [(q["5"]["inputs"]["outer_steps"], q["6"]["inputs"]["seed"]) for q in ran] == [(1, 3)]
    assert "[6 TMDSampler] 2/2 (100%)" in p.stderr  # progress over outer x inner = 1 x 2
