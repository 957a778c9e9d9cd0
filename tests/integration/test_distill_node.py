"""TMDDistill on the real ComfyUI: a native MODEL from UNETLoader as the teacher, in-process training under
ComfyUI's executor (inference mode, progress hook, /interrupt), and the toy world's data generation.

umt5-xxl cannot run here, so the Wan teacher trains on shards the test writes (data_folder); the toy
teacher makes its own data from prompts with the toy text encoder (no CLIP needed).
"""

import json
import os
import struct
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import torch
from comfy_host import REPO
from host_models import (
    LORA_NAME,
    LORA_STRENGTH,
    TEACHER_NAME,
    TOY_TEACHER_NAME,
    stand_in_conditioning,
    write_native_models,
    write_toy_teacher,
    write_wan_models,
)
from safetensors import safe_open
from safetensors.torch import load_file

import tmd_core
from tmd_core.comfy_client import ComfyClient, ComfyRunError, output_files
from tmd_core.training.make_data import write_latents

SHARDS = "tmd_it_shards"  # under the server's output folder, where data_folder is resolved


@pytest.fixture(scope="module")
def teachers(comfyui):
    """The tiny Wan teacher (diffusion_models), 6 shards of its shape, and the tiny toy teacher."""
    write_wan_models(comfyui.models_dir)
    g = torch.Generator().manual_seed(0)
    contexts = [stand_in_conditioning(f"prompt {i}", tokens=3 + i % 2)[0] for i in range(6)]
    write_latents(comfyui.output_dir / SHARDS, torch.randn(6, 16, 1, 4, 4, generator=g), contexts,
                  [f"prompt {i}" for i in range(6)], negative_context=torch.zeros(1, 4096), shard_size=4)  # fmt: skip
    write_toy_teacher(comfyui.models_dir)
    return comfyui


def distill_node(**inputs) -> dict:
    base = {"prompts": "", "stages": "stage1+stage2", "outer_steps": 2, "inner_steps": 2, "head_blocks": 1,
            "stage1_iterations": 2, "stage2_iterations": 2, "lr_stage1": 1e-4, "lr_student": 1e-4, "batch_size": 2,
            "frames": 1, "width": 32, "height": 32, "samples_per_prompt": 1, "teacher_steps": 2, "guidance_scale": 5.0,
            "teacher_shift": 8.0, "output_name": "tmd_it", "resume": False, "seed": 0, "teacher_name": "none",
            "prompt_file": "", "data_folder": ""}  # fmt: skip
    return {"class_type": "TMDDistill", "inputs": {**base, **inputs}}


def native_teacher_graph(**inputs) -> dict:
    return {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": TEACHER_NAME, "weight_dtype": "default"}},
            "2": distill_node(teacher=["1", 0], data_folder=SHARDS, **inputs)}  # fmt: skip


@contextmanager
def node_texts(url: str):
    """Collects the progress texts (binary websocket frames of type 3: node id, text) the server broadcasts."""
    import websocket

    texts, stop = [], threading.Event()
    ws = websocket.WebSocket()
    ws.connect(url.replace("http", "ws", 1) + "/ws?clientId=tmd-it-texts", timeout=30)
    ws.settimeout(0.5)

    def listen():
        while not stop.is_set():
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if isinstance(raw, bytes) and struct.unpack(">I", raw[:4])[0] == 3:
                n = struct.unpack(">I", raw[4:8])[0]
                texts.append((raw[8 : 8 + n].decode(), raw[8 + n :].decode()))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield texts
    finally:
        stop.set()
        thread.join(5)
        ws.close()


def node_progress(progress, node):
    return [(p.value, p.max) for p in progress if p.node == node and p.value is not None]


def test_a_native_teacher_distills_into_models_tmd_and_the_output_samples(teachers):
    server = teachers
    prompt = native_teacher_graph(output_name="tmd_it_native")
    prompt |= {
        "3": {"class_type": "TMDTestConditioning", "inputs": {"text": "a fox", "tokens": 512, "width": 4096}},
        "4": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 32, "height": 32, "length": 1, "batch_size": 1}},
        "5": {"class_type": "TMDSchedule", "inputs": {"outer_steps": 2, "inner_steps": 2, "outer_shift": 10.0, "inner_shift": 10.0}},
        "6": {"class_type": "TMDSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "latent": ["4", 0],
                                                     "schedule": ["5", 0], "seed": 9}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "tmd_it/distilled"}},
    }  # fmt: skip
    progress = []
    entry = ComfyClient(server.url).run(prompt, on_progress=progress.append, timeout=900)

    path = server.models_dir / "tmd" / "tmd_it_native.safetensors"
    info = tmd_core.read_tmd_info(path)
    prov = info["provenance"]
    assert prov["stages"] == ["stage1", "stage2"] and prov["iterations"] == {"stage1": 2, "stage2": 2}
    assert prov["teacher"] == "(in-process)" and prov["data"] == {"folder": SHARDS, "num_samples": 6}
    assert info["head_blocks"] == 1 and info["num_layers"] == 4
    assert node_progress(progress, "2")[-1] == (4, 4)
    [text] = entry["outputs"]["2"]["text"]
    assert "loss" in text and text.endswith(f"saved {path}")

    # the node's TMD_MODEL output is the saved student: the sampler's latent is the library's sample of the file
    [latent_file] = [f for f in output_files(entry) if f["node"] == "7"]
    latent = load_file(str(server.output_dir / "tmd_it" / latent_file["filename"]))["latent_tensor"]
    from test_wan_workflow import wan21_stats

    x0 = tmd_core.sample_tmd(tmd_core.load_tmd(path), tmd_core.make_noise((1, 16, 1, 4, 4), seed=9),
                             stand_in_conditioning("a fox"), tmd_core.TMDSchedule(outer_steps=2, inner_steps=2))  # fmt: skip
    mean, std = wan21_stats()
    torch.testing.assert_close(latent, x0 * std + mean, rtol=1e-4, atol=1e-4)


def test_interrupt_saves_a_resumable_state_and_resume_finishes_the_run(teachers):
    server = teachers
    iterations = 300
    prompt = native_teacher_graph(output_name="tmd_it_stop", stages="stage1", stage1_iterations=iterations)
    seen = []

    def on_progress(p):
        if p.node == "2" and p.value is not None and not seen:
            seen.append(p.value)
            requests.post(server.url + "/interrupt", timeout=30)

    with pytest.raises(ComfyRunError, match=r"was interrupted at node 2 \(TMDDistill\)"):
        ComfyClient(server.url).run(prompt, on_progress=on_progress, timeout=900)
    run = server.output_dir / "tmd_runs" / "tmd_it_stop"
    with safe_open(str(run / "state-stage1.safetensors"), "pt") as f:
        stopped_at = int(f.metadata()["step"])
    assert seen and seen[0] <= stopped_at < iterations
    assert (run / "tmd_it_stop.partial.safetensors").is_file()
    assert not (server.models_dir / "tmd" / "tmd_it_stop.safetensors").exists()

    with pytest.raises(ComfyRunError, match="already holds a run: resume it"):  # the same inputs again
        ComfyClient(server.url).run(prompt, timeout=300)
    prompt["2"]["inputs"]["resume"] = True
    progress = []
    ComfyClient(server.url).run(prompt, on_progress=progress.append, timeout=900)
    prov = tmd_core.read_tmd_info(server.models_dir / "tmd" / "tmd_it_stop.safetensors")["provenance"]
    assert prov["iterations"] == {"stage1": iterations} and prov["complete"] is True
    values = [v for v, _ in node_progress(progress, "2")]
    assert values[0] > stopped_at and values[-1] == iterations  # continued from the saved state
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r.get("event") for r in records].count("start") == 1  # one run, not a restart


def test_a_toy_teacher_makes_its_data_distills_and_previews_with_pack_nodes_only(teachers):
    server = teachers
    prompts = "a red circle moving left fast\na blue square moving up slow"
    prompt = {
        "1": distill_node(teacher_name=TOY_TEACHER_NAME, prompts=prompts, stages="stage1", frames=8, width=32,
                          height=32, guidance_scale=4.0, teacher_shift=3.0, output_name="tmd_it_toy"),
        "2": {"class_type": "TMDToyTextEncode", "inputs": {"text": "a red circle moving left fast"}},
        "3": {"class_type": "TMDToyEmptyLatent", "inputs": {"batch_size": 1}},
        "4": {"class_type": "TMDSchedule", "inputs": {"outer_steps": 2, "inner_steps": 2, "outer_shift": 3.0, "inner_shift": 10.0}},
        "5": {"class_type": "TMDSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "latent": ["3", 0],
                                                     "schedule": ["4", 0], "seed": 0}},
        "6": {"class_type": "TMDToyDecode", "inputs": {"samples": ["5", 0], "scale": 2}},
        "7": {"class_type": "CreateVideo", "inputs": {"images": ["6", 0], "fps": 8}},
        "8": {"class_type": "SaveVideo", "inputs": {"video": ["7", 0], "filename_prefix": "tmd_it/toy_distilled",
                                                    "format": "auto", "codec": "auto"}},
    }  # fmt: skip
    progress = []
    with node_texts(server.url) as texts:
        entry = ComfyClient(server.url).run(prompt, on_progress=progress.append, timeout=900)
    assert node_progress(progress, "1")[-1] == (4, 4)  # 2 teacher samples + 2 iterations
    shown = [t for node, t in texts if node == "1"]  # live on the node in the frontend
    assert shown[:2] == ["teacher samples 1/2", "teacher samples 2/2"] and shown[-1].startswith("stage1 2/2 | loss ")
    data = tmd_core.training.ShardDataset(server.output_dir / "tmd_runs" / "tmd_it_toy" / "data")
    assert len(data) == 2 and data.latent_shape == (16, 2, 4, 4)
    prov = tmd_core.read_tmd_info(server.models_dir / "tmd" / "tmd_it_toy.safetensors")["provenance"]
    assert prov["teacher"] == TOY_TEACHER_NAME and prov["stages"] == ["stage1"]
    [video] = [f for f in output_files(entry) if f["node"] == "8"]
    assert video["filename"].endswith(".mp4")


def test_a_lora_on_the_teacher_model_is_in_the_teacher_without_a_copy_of_the_model(tmp_path):
    """In ComfyUI's venv (teacher_checks.py): UNETLoader + LoraLoaderModelOnly -> the teacher TMDDistill trains with."""
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        pytest.skip("COMFYUI_PATH is not set")
    models = tmp_path / "models"
    for folder in ("tmd", "diffusion_models", "loras"):
        (models / folder).mkdir(parents=True)
    base, files = write_wan_models(models), write_native_models(models)
    p = subprocess.run([str(Path(comfy_path) / ".venv" / "bin" / "python"), str(REPO / "tests" / "integration" / "teacher_checks.py"),
                        str(REPO), str(base["teacher"]), str(files["teacher_bf16"]), str(files["lora"]), str(LORA_STRENGTH),
                        str(tmp_path)], cwd=comfy_path, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("JSON="))[5:])
    print(r)
    # the LoRA is in the teacher exactly as merged by hand: its velocity, and the data it makes for training
    assert r["lora_effect_max_abs"] > 0.05
    assert r["velocity_vs_merged_max_abs"] <= 1e-5 * max(1.0, r["velocity_scale"])
    assert r["data_vs_merged_max_abs"] <= 1e-5 and r["trained"]
    # no copy: new bytes are the LoRA's target weights (patched), the rest is ComfyUI's memory; no inference tensor
    assert r["teacher_new_bytes"] == r["lora_target_bytes"] > 0 and r["teacher_inference_tensors"] == 0
    assert r["teacher_shared_bytes"] + r["teacher_new_bytes"] == r["model_weight_bytes"]
    # the MODEL is only read: same tensors, same bytes, same patches after training
    assert r["model_unchanged"] and r["model_patches_unchanged"]
    # fp8 weights: a bf16 copy (nothing shared), within the fp8 tolerance of the bf16 file with the LoRA merged
    assert r["fp8_teacher_dtype"] == "torch.bfloat16" and r["fp8_teacher_shared_bytes"] == 0
    assert 0 < r["fp8_vs_bf16_rel_l2"] <= 0.08


def run_with_previews(url: str, prompt: dict, timeout: float = 900) -> tuple[dict, list[bytes]]:
    """Queue `prompt` as the frontend does and collect the binary preview frames sent to its client (type 1:
    PREVIEW_IMAGE, 4-byte image type then the image). Returns (its /history entry, previews)."""
    import time

    import websocket

    client = "tmd-it-previews"
    ws = websocket.WebSocket()
    ws.connect(url.replace("http", "ws", 1) + f"/ws?clientId={client}", timeout=30)
    try:
        r = requests.post(url + "/prompt", json={"prompt": prompt, "client_id": client}, timeout=30)
        r.raise_for_status()
        prompt_id, previews, deadline = r.json()["prompt_id"], [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if isinstance(raw, bytes):
                if struct.unpack(">I", raw[:4])[0] == 1:
                    previews.append(raw[4:])
                continue
            msg = json.loads(raw)
            data = msg.get("data") or {}
            if msg.get("type") == "executing" and data.get("prompt_id") == prompt_id and data.get("node") is None:
                break
    finally:
        ws.close()
    return requests.get(f"{url}/history/{prompt_id}", timeout=30).json()[prompt_id], previews


def test_toy_validation_previews_show_on_the_node_stay_in_the_history_and_the_run_folder(teachers):
    import io

    from PIL import Image

    server = teachers
    prompt = {"1": distill_node(teacher_name=TOY_TEACHER_NAME, prompts="a red circle moving left fast", stages="stage1",
                                frames=8, guidance_scale=4.0, teacher_shift=3.0, output_name="tmd_it_previews",
                                validation_every=1,
                                validation_prompts="a red circle moving left fast\na blue square moving up slow")}  # fmt: skip
    entry, previews = run_with_previews(server.url, prompt)
    assert entry["status"]["status_str"] == "success"
    images = entry["outputs"]["1"]["images"]  # what the node shows once it finished (and after a reload)
    assert images == [{"filename": f"stage1-000002-{k}.webp", "subfolder": "tmd_runs/tmd_it_previews/validation",
                       "type": "output"} for k in range(2)]  # fmt: skip
    folder = server.output_dir / "tmd_runs" / "tmd_it_previews" / "validation"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"stage1-00000{s}{x}" for s in (1, 2) for x in (".safetensors", ".png", "-0.webp", "-1.webp"))
    for image in images:  # served to the frontend by /view
        r = requests.get(server.url + "/view", params=image, timeout=30)
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).n_frames == 8
    # live: the sheet (2 prompts x 8 frames of 128 px) after each of the 2 steps, as a JPEG at most 512 px wide
    assert len(previews) == 2
    assert all(p[:4] == struct.pack(">I", 1) and Image.open(io.BytesIO(p[4:])).size == (512, 128) for p in previews)
    sheet = Image.open(folder / "stage1-000002.png")
    assert sheet.size == (1024, 256)


def test_a_lora_teacher_through_the_graph_with_wan_vae_previews(teachers, wan_models):
    """UNETLoader -> LoraLoaderModelOnly -> TMDDistill (VAELoader's Wan VAE for the previews) under ComfyUI's executor:
    the LoRA reaches the teacher (another teacher hash than the plain MODEL's), the previews decode with ComfyUI's VAE."""
    from tmd_core.loading import load_teacher
    from tmd_core.training.builders import state_dict_sha256

    server = teachers
    write_native_models(server.models_dir)  # the style LoRA in models/loras
    prompt = native_teacher_graph(output_name="tmd_it_lora", stages="stage1", stage1_iterations=1, validation_every=1,
                                  vae=["6", 0])
    prompt["2"]["inputs"]["teacher"] = ["5", 0]
    prompt["5"] = {"class_type": "LoraLoaderModelOnly",
                   "inputs": {"model": ["1", 0], "lora_name": LORA_NAME, "strength_model": LORA_STRENGTH}}
    prompt["6"] = {"class_type": "VAELoader", "inputs": {"vae_name": wan_models.vae}}  # fmt: skip
    entry, previews = run_with_previews(server.url, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    prov = tmd_core.read_tmd_info(server.models_dir / "tmd" / "tmd_it_lora.safetensors")["provenance"]
    plain = load_teacher(server.models_dir / "diffusion_models" / TEACHER_NAME)
    assert prov["teacher"] == "(in-process)" and prov["teacher_sha256"] != state_dict_sha256(plain)
    # previews of the data's first two samples (no prompts given), 1 frame of 32 x 32 pixels upscaled 4x
    assert [i["filename"] for i in entry["outputs"]["2"]["images"]] == ["stage1-000001-0.webp", "stage1-000001-1.webp"]
    from PIL import Image

    sheet = Image.open(server.output_dir / "tmd_runs" / "tmd_it_lora" / "validation" / "stage1-000001.png")
    assert sheet.size == (128, 256) and len(previews) == 1
