"""TMDDistill: teacher (file or native MODEL) + prompts (CLIP) or shards -> a tmd/1 student in models/tmd.

Every call runs under torch.inference_mode(), as ComfyUI's executor runs nodes: training must switch it off.
The teacher is the 4-block tiny Wan (16 latent channels, 24-wide text); videos are 1 frame of 32x32 pixels.
"""

import importlib
import json
from types import SimpleNamespace

import pytest
import torch
from comfy_fakes import run_node
from safetensors import safe_open

import tmd_core
from tmd_core.loading import teacher_sha256
from tmd_core.training import ShardDataset
from tmd_core.training.builders import state_dict_sha256
from tmd_core.training.distill import make_config, preset_for_teacher
from tmd_core.training.make_data import WAN_NEGATIVE_PROMPT, write_latents

TEXT_WIDTH = 24


def stand_in_embedding(text: str) -> torch.Tensor:
    """Tensor[1, 16, 24]: 5 seeded rows per text, zero padding after (like umt5's)."""
    g = torch.Generator().manual_seed(sum(map(ord, text)))
    c = torch.zeros(1, 16, TEXT_WIDTH)
    c[:, :5] = torch.randn(1, 5, TEXT_WIDTH, generator=g)
    return c


class StandInClip:
    """The two methods of a native CLIP that CLIPTextEncode (and TMDDistill) call."""

    def __init__(self):
        self.encoded = []

    def tokenize(self, text):
        return {"text": text}

    def encode_from_tokens_scheduled(self, tokens):
        self.encoded.append(tokens["text"])
        return [[stand_in_embedding(tokens["text"]), {"pooled_output": None}]]


SETTINGS = dict(prompts="a red circle\n\na blue square\n", stages="stage1+stage2", outer_steps=2, inner_steps=2,
                head_blocks=1, stage1_iterations=2, stage2_iterations=2, lr_stage1=1e-4, lr_student=1e-4,
                batch_size=2, frames=1, width=32, height=32, samples_per_prompt=1, teacher_steps=2,
                guidance_scale=5.0, teacher_shift=8.0, output_name="tiny", resume=False, seed=0)  # fmt: skip


def distill(nodes, **over):
    kwargs = {**SETTINGS, "teacher_name": "wan/teacher.safetensors", "unique_id": "12", **over}
    with torch.inference_mode():  # what ComfyUI's executor does around every node
        return run_node(nodes.TMDDistill, **kwargs)


def interrupt_at(host, value):
    """A progress hook like ComfyUI's that also does POST /interrupt once the bar reaches `value`."""
    mm = host.model_management

    def hook(v, total, preview, node_id=None):
        mm.throw_exception_if_processing_interrupted()
        host.progress.append((v, total, node_id))
        if v == value:
            host.interrupt()

    host.utils.set_progress_bar_global_hook(hook)


def test_distills_into_the_tmd_folder_with_provenance_progress_and_loss(nodes, host, teacher_file):
    clip = StandInClip()
    out = distill(nodes, clip=clip)
    patcher, path = out.result
    assert path == str(host.models_dir / "tmd" / "tiny.safetensors")
    info = tmd_core.read_tmd_info(path)
    prov = info["provenance"]
    assert prov["stages"] == ["stage1", "stage2"] and prov["iterations"] == {"stage1": 2, "stage2": 2}
    assert prov["complete"] is True and prov["teacher"] == "teacher.safetensors"
    assert prov["teacher_sha256"] == teacher_sha256(teacher_file)
    assert (info["head_blocks"], info["tmd_config"]["outer_steps"], info["tmd_config"]["inner_steps"]) == (1, 2, 2)
    ref = tmd_core.load_tmd(path).state_dict()
    got = patcher.model.state_dict()
    assert isinstance(patcher, host.model_patcher.ModelPatcher) and all(torch.equal(got[k], ref[k]) for k in ref)
    assert host.progress == [(k, 6, None) for k in range(1, 7)]  # 2 data samples + 2 + 2 iterations
    [text] = out.ui["text"]
    assert text.startswith("stage2 step 2 | ") and "loss" in text and text.endswith(f"saved {path}")
    shown = [t for node, t in host.server.progress_texts if node == "12"]  # live on the node (hidden UNIQUE_ID)
    assert shown[:2] == ["teacher samples 1/2", "teacher samples 2/2"]
    assert shown[2].startswith("stage1 2/2 | loss ") and shown[4].startswith("stage2 2/2 | ")
    # validation previews after the last step of each stage: without a VAE only latents, and the node says so once
    assert shown[3].startswith("validation previews: latents saved in validation/; connect the Wan VAE")
    assert "images" not in out.ui and host.previews == []
    assert sorted(p.name for p in (host.output_dir / "tmd_runs" / "tiny" / "validation").iterdir()) == [
        "stage1-000002.safetensors", "stage2-000002.safetensors"]

    # the teacher sampled the given prompts, with Wan's negative prompt as the CFG null condition
    assert clip.encoded == ["a red circle", "a blue square", WAN_NEGATIVE_PROMPT]
    run = host.output_dir / "tmd_runs" / "tiny"
    data = ShardDataset(run / "data")
    assert [data.sample(i)[2] for i in range(len(data))] == ["a red circle", "a blue square"]
    assert data.latent_shape == (16, 1, 4, 4)
    torch.testing.assert_close(data.negative_context[0], stand_in_embedding(WAN_NEGATIVE_PROMPT)[0, :5])
    assert (run / "log.jsonl").is_file() and not list((host.models_dir / "tmd").glob(".*tmp"))


def test_a_native_model_is_the_teacher_and_its_inference_tensors_are_not_trained_on(nodes, host, tiny_wan16, tmp_path):
    """UNETLoader's MODEL: ComfyUI's module with `diffusion_model.` original keys, loaded under inference mode."""
    from tmd_core.layouts import diffusers_to_original_state_dict

    teacher = tiny_wan16(1)
    with torch.inference_mode():
        native = {k: v.clone() for k, v in diffusers_to_original_state_dict(teacher.state_dict(), "diffusion_model.").items()}

    class BaseModel(torch.nn.Module):  # only what the node reads: the state dict, the WanModel's head count
        diffusion_model = SimpleNamespace(num_heads=2)

        def state_dict(self, *args, **kwargs):
            return dict(native)

    model = host.model_patcher.ModelPatcher(BaseModel(), torch.device("cpu"), torch.device("cpu"))
    teacher_model = importlib.import_module(nodes.__name__ + ".teacher_model")
    with nodes.host.training_mode():
        built = teacher_model.teacher_from_model(model)
    got = built.state_dict()
    assert all(torch.equal(got[k], v) for k, v in teacher.state_dict().items())
    # no copy: every parameter is a normal tensor on the MODEL's (inference-mode) storage
    ptrs = {v.untyped_storage().data_ptr() for v in native.values()}
    assert all(p.untyped_storage().data_ptr() in ptrs and not p.is_inference() for p in built.parameters())
    report = teacher_model.storage_report(built, model)
    assert report == {"shared_bytes": sum(v.nbytes for v in native.values()), "new_bytes": 0}
    g = torch.Generator().manual_seed(0)
    write_latents(host.output_dir / "shards", torch.randn(4, 16, 1, 4, 4, generator=g),
                  [torch.randn(3, TEXT_WIDTH, generator=g) for _ in range(4)], negative_context=torch.zeros(1, TEXT_WIDTH))  # fmt: skip
    out = distill(nodes, teacher=model, teacher_name="none", data_folder="shards", prompts="", stages="stage2")
    prov = tmd_core.read_tmd_info(out.result[1])["provenance"]
    assert prov["teacher"] == "(in-process)" and prov["stages"] == ["stage2"]
    assert prov["teacher_sha256"] == state_dict_sha256(teacher)
    assert prov["data"] == {"folder": "shards", "num_samples": 4}


@pytest.mark.parametrize(("phase", "stop_at", "resumed_at"), [("data", 1, 1), ("stage1", 3, 4)])
def test_interrupt_saves_a_resumable_state_and_resume_finishes_the_run(nodes, host, teacher_file, phase, stop_at,
                                                                       resumed_at):
    """Data: shards of 8 samples are what a stop keeps (here none); training: the state of the step it stopped at."""
    clip = StandInClip()
    interrupt_at(host, stop_at)
    with pytest.raises(host.model_management.InterruptProcessingException):
        distill(nodes, clip=clip)
    assert not host.model_management.processing_interrupted()  # raised and cleared, as ComfyUI's own checks do
    assert host.progress[-1] == (stop_at, 6, None)  # stopped after the step it was asked in
    run = host.output_dir / "tmd_runs" / "tiny"
    assert not (host.models_dir / "tmd" / "tiny.safetensors").exists()
    if phase == "stage1":
        with safe_open(str(run / "state-stage1.safetensors"), "pt") as f:
            assert f.metadata()["step"] == "1"
        assert (run / "tiny.partial.safetensors").is_file()
    with pytest.raises(ValueError, match="already holds a run: resume it"):
        distill(nodes, clip=clip)

    host.progress.clear()
    host.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: host.progress.append((v, t, node_id)))
    out = distill(nodes, clip=clip, resume=True)
    assert tmd_core.read_tmd_info(out.result[1])["provenance"]["iterations"] == {"stage1": 2, "stage2": 2}
    assert host.progress[0][0] == resumed_at and host.progress[-1] == (6, 6, None)  # continued, not restarted
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    logged = [(r["stage"], r["step"]) for r in records if "event" not in r]
    assert logged == [("stage1", 2), ("stage2", 2)]  # the preset logs every 10th and the last step, each once
    assert not (run / "tiny.partial.safetensors").exists()


def test_a_toy_teacher_needs_no_clip_and_makes_toy_latents(nodes, host, toy_assets):
    assert "toy/toy_teacher.safetensors" in nodes.TMDDistill.INPUT_TYPES()["optional"]["teacher_name"][1]["options"]
    assert "toy/toy_tmd.safetensors" not in nodes.TMDDistill.INPUT_TYPES()["optional"]["teacher_name"][1]["options"]
    out = distill(nodes, teacher_name="toy/toy_teacher.safetensors", prompts="a red circle moving left fast",
                  stages="stage1", stage1_iterations=1, frames=8, width=32, height=32, batch_size=1, output_name="toy")
    data = ShardDataset(host.output_dir / "tmd_runs" / "toy" / "data")
    assert data.latent_shape == (16, 2, 4, 4)
    from tmd_core.toy.text import ToyTextEncoder

    context = ToyTextEncoder().encode(["a red circle moving left fast"])[0]  # 6 words, then zero padding
    torch.testing.assert_close(data.sample(0)[1], context[:6])
    prov = tmd_core.read_tmd_info(out.result[1])["provenance"]
    assert prov["teacher"] == "toy_teacher.safetensors" and prov["stages"] == ["stage1"]


def test_a_dmd2v_student_is_no_teacher_in_the_menu_nor_by_name(nodes, host, toy_assets, teacher_file):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    def as_dmd2v(src, dst):  # the same plain Wan file, marked as a DMD2-v student (what the training loop writes)
        with safe_open(str(src), "pt") as f:
            save_file({k: f.get_tensor(k) for k in f.keys()}, str(dst), metadata={**(f.metadata() or {}), "format": "wan-dmd"})
        if src.with_suffix(".config.json").exists():
            shutil.copy(src.with_suffix(".config.json"), dst.with_suffix(".config.json"))

    as_dmd2v(toy_assets / "toy_teacher.safetensors", toy_assets / "toy_dmd2v.safetensors")
    as_dmd2v(teacher_file, teacher_file.parent / "dmd.safetensors")
    menu = nodes.TMDDistill.INPUT_TYPES()["optional"]["teacher_name"][1]["options"]
    assert "toy/toy_teacher.safetensors" in menu and "toy/toy_dmd2v.safetensors" not in menu
    with pytest.raises(ValueError, match="dmd.safetensors is a DMD2-v student .* pick the Wan teacher"):
        distill(nodes, teacher_name="wan/dmd.safetensors")


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"teacher_name": "none"}, "no teacher: connect a Wan2.1 MODEL"),
        ({"prompts": " \n"}, "no prompts: give at least one prompt"),
        ({}, "no text encoder for the prompts: connect a CLIP"),  # a Wan teacher without a CLIP
        ({"output_name": "../x"}, "output name '../x' must be a plain file name"),
        ({"teacher_name": "../secret.safetensors"}, "points outside the diffusion_models model folder"),
        ({"data_folder": "nowhere"}, "data folder .*nowhere' does not exist: make one with `tmd make-data"),
        ({"width": 40, "clip": StandInClip()}, "width and height must be positive multiples of 16"),
    ],
)
def test_unusable_inputs_are_refused_with_what_to_do(nodes, host, teacher_file, over, message):
    with pytest.raises(ValueError, match=message):
        distill(nodes, **over)
    assert not (host.output_dir / "tmd_runs" / "tiny").exists()  # nothing half-made


def test_an_existing_student_is_not_overwritten(nodes, host, teacher_file, tmd_file):
    with pytest.raises(ValueError, match="student.safetensors exists: choose another output_name, or turn resume"):
        distill(nodes, clip=StandInClip(), output_name="student")


def test_a_model_that_is_not_wan_or_data_of_another_teacher_is_refused(nodes, host, teacher_file):
    class SD15(torch.nn.Module):
        def state_dict(self, *args, **kwargs):
            return {"diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}

    model = host.model_patcher.ModelPatcher(SD15(), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(ValueError, match="the teacher MODEL"):
        distill(nodes, teacher=model, clip=StandInClip())
    write_latents(host.output_dir / "toy_shards", torch.zeros(2, 48, 8, 8, 8), [torch.ones(2, 32)] * 2)
    with pytest.raises(ValueError, match="has 48-channel latents and 32-wide text embeddings, the teacher expects 16 and 24"):
        distill(nodes, data_folder="toy_shards")


def test_stage2_alone_starts_from_the_teacher_and_the_preset_follows_the_teacher(nodes, host, tiny_wan16, tiny_toy):
    toy = tiny_toy()
    assert preset_for_teacher(toy) == "toy"
    assert preset_for_teacher(tiny_wan16()) == "wan21_1p3b"
    cfg = make_config(tiny_wan16(), host.output_dir / "r", host.output_dir / "d",
                                                  name="x", stages=("stage2",), overrides={"stage2": {"iterations": 3}})  # fmt: skip
    assert cfg.stage2.init_from_teacher and cfg.stage2.iterations == 3 and cfg.name == "x"


def test_an_interrupt_consumed_by_the_progress_hook_still_stops_training(nodes, host):
    """/interrupt landing while the bar updates: ComfyUI's hook raises and clears the flag; the run must still stop."""
    mm = host.model_management

    def hook(v, total, preview, node_id=None):
        host.interrupt()  # arrives during the update
        mm.throw_exception_if_processing_interrupted()

    host.utils.set_progress_bar_global_hook(hook)
    bar = nodes.host.TrainingProgress({"data": 2, "stage1": 3})
    bar("stage1", 1, 3, {})  # does not raise out of the training loop
    assert bar.should_stop() and mm.processing_interrupted()
    with pytest.raises(mm.InterruptProcessingException):
        bar.raise_interrupted()
    assert not mm.processing_interrupted()


def read_latents(path):
    with safe_open(str(path), "pt") as f:
        return f.get_tensor("latents"), json.loads(f.metadata()["prompts"]), json.loads(f.metadata()["seeds"])


def test_toy_previews_every_k_steps_reach_the_node_the_run_folder_and_the_ui(nodes, host, toy_assets):
    """validation_every 1 of 2 steps, three prompts: a PNG sheet and a WEBP per prompt per step, the sheet sent as
    the node's live preview, the last step's WEBPs in the ui output (served from the output folder)."""
    from PIL import Image

    from tmd_core.toy.codec import decode_latents

    prompts = "a red circle moving left fast\na blue square moving up slow\na green triangle moving right fast"
    out = distill(nodes, teacher_name="toy/toy_teacher.safetensors", prompts="a red circle moving left fast",
                  stages="stage1", stage1_iterations=2, frames=8, batch_size=1, output_name="toy",
                  validation_every=1, validation_prompts=prompts)
    folder = host.output_dir / "tmd_runs" / "toy" / "validation"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"stage1-00000{s}{x}" for s in (1, 2)
                           for x in (".safetensors", ".png", "-0.webp", "-1.webp", "-2.webp"))
    latents, texts, seeds = read_latents(folder / "stage1-000002.safetensors")
    assert texts == prompts.splitlines() and seeds == [0, 1, 0] and latents.shape == (3, 16, 2, 4, 4)
    # the sheet is the toy VAE's decoding: 3 rows (prompts) x 8 frames of 32 px upscaled 4x
    sheet = Image.open(folder / "stage1-000002.png")
    assert sheet.size == (8 * 128, 3 * 128)
    frames = ((decode_latents(latents, toy_assets / "toy_vae.safetensors") + 1) / 2).clamp(0, 1)  # (3, 3, 8, 32, 32)
    pixel = (frames[1, :, 5, 7, 9] * 255).round().to(torch.uint8).tolist()  # prompt 1, frame 5, row 7, column 9
    assert list(sheet.getpixel((5 * 128 + 9 * 4, 128 + 7 * 4))) == pixel
    webp = Image.open(folder / "stage1-000002-1.webp")
    assert webp.n_frames == 8 and webp.size == (128, 128)
    # live: one preview per validation step, at the bar's current value (1 data sample + step), a JPEG of the sheet
    assert [(v, t, node) for v, t, _, node in host.previews] == [(2, 3, None), (3, 3, None)]
    kind, image, size = host.previews[-1][2]
    assert (kind, size) == ("JPEG", 512) and image.size == sheet.size
    assert out.ui["images"] == [{"filename": f"stage1-000002-{k}.webp", "subfolder": "tmd_runs/toy/validation",
                                    "type": "output"} for k in range(3)]
    assert out.ui["animated"] == (True,) and out.ui["text"][0].endswith("toy.safetensors")


class StandInVAE:
    """A ComfyUI VAE's decode for video latents: raw Tensor[B, 16, F, h, w] -> frames Tensor[B, F, 8h, 8w, 3]."""

    def __init__(self):
        self.decoded = []

    def decode(self, samples):
        self.decoded.append(samples)
        x = torch.sigmoid(samples[:, :3]).repeat_interleave(8, -1).repeat_interleave(8, -2)
        return x.permute(0, 2, 3, 4, 1)


def test_wan_previews_decode_the_first_training_prompts_with_the_connected_vae(nodes, host, teacher_file):
    vae = StandInVAE()
    prompts = "a red circle\na blue square\na green cone"
    out = distill(nodes, clip=StandInClip(), vae=vae, prompts=prompts, stages="stage1", validation_every=0)
    assert vae.decoded == [] and "images" not in out.ui  # 0: no previews

    out = distill(nodes, clip=StandInClip(), vae=vae, prompts=prompts, stages="stage1", validation_every=2,
                  output_name="tiny2")
    folder = host.output_dir / "tmd_runs" / "tiny2" / "validation"
    latents, texts, seeds = read_latents(folder / "stage1-000002.safetensors")
    assert texts == ["a red circle", "a blue square"] and seeds == [0, 1]  # default: the first two training prompts
    [raw] = vae.decoded
    mean, std = host.latent_formats.Wan21().latents_mean, host.latent_formats.Wan21().latents_std
    torch.testing.assert_close(raw, latents * std + mean)  # the VAE gets raw VAE-space latents
    assert [e["filename"] for e in out.ui["images"]] == ["stage1-000002-0.webp", "stage1-000002-1.webp"]
    assert (folder / "stage1-000002.png").is_file() and len(host.previews) == 1


def test_validation_prompts_of_a_wan_teacher_need_its_clip(nodes, host, teacher_file):
    write_latents(host.output_dir / "shards", torch.randn(2, 16, 1, 4, 4), [torch.randn(3, TEXT_WIDTH)] * 2)
    with pytest.raises(ValueError, match="validation_prompts need the teacher's text encoder: connect a CLIP"):
        distill(nodes, data_folder="shards", prompts="", validation_prompts="a fox")
    assert not (host.output_dir / "tmd_runs" / "tiny").exists()


def test_a_vae_of_another_family_is_refused_and_a_failing_decode_does_not_end_the_run(nodes, host, teacher_file):
    sd_vae = StandInVAE()
    sd_vae.latent_channels = 4  # what ComfyUI's VAE says of an SD1.5 VAE
    with pytest.raises(ValueError, match="vae decodes 4-channel latents, the teacher makes 16: connect the Wan2.1 VAE"):
        distill(nodes, clip=StandInClip(), vae=sd_vae)
    assert not (host.output_dir / "tmd_runs" / "tiny").exists()

    class Broken(StandInVAE):
        def decode(self, samples):
            raise RuntimeError("out of memory")

    out = distill(nodes, clip=StandInClip(), vae=Broken(), stages="stage1", validation_every=1)
    assert tmd_core.read_tmd_info(out.result[1])["provenance"]["complete"] is True
    notes = [t for node, t in host.server.progress_texts if t.startswith("validation previews")]
    assert notes == ["validation previews: decoding failed (RuntimeError: out of memory); latents saved in "
                     "validation/, training goes on"]  # once, not per step
    assert "images" not in out.ui


def test_lora_mode_writes_a_patch_and_outputs_the_patched_teacher(nodes, host, teacher_file, tiny_wan16):
    """mode lora: one copy of the teacher's weights trains LoRAs; models/tmd gets the TMD patch, and the node's
    TMD_MODEL is that patch on the teacher (what `tmd generate PATCH --teacher T` loads)."""
    out = distill(nodes, clip=StandInClip(), mode="lora", stage1_iterations=1, stage2_iterations=1)
    patcher, path = out.result
    info = tmd_core.read_patch_info(path)
    assert info["lora"]["rank"] == 64 and info["lora"]["full_tensors"] == 0
    assert info["provenance"]["lora_mode"]["targets"] == ["self_attn", "cross_attn", "ffn"]
    ref = tmd_core.load_patched(path, tiny_wan16(1)).state_dict()
    got = patcher.model.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_lora_mode_on_a_model_teacher_leaves_the_model_as_it_was(nodes, host, tiny_wan16):
    """Both issue-11 halves at once: the teacher aliases the MODEL's weights, LoRA mode trains adapters on views of
    that teacher and the output merges the patch into it; the MODEL's tensors keep their storage and values."""
    from tmd_core.layouts import diffusers_to_original_state_dict

    teacher = tiny_wan16(1)
    with torch.inference_mode():
        native = {k: v.clone() for k, v in diffusers_to_original_state_dict(teacher.state_dict(), "diffusion_model.").items()}
    before = {k: (v.untyped_storage().data_ptr(), v.clone()) for k, v in native.items()}

    class BaseModel(torch.nn.Module):
        diffusion_model = SimpleNamespace(num_heads=2)

        def state_dict(self, *args, **kwargs):
            return dict(native)

    model = host.model_patcher.ModelPatcher(BaseModel(), torch.device("cpu"), torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    write_latents(host.output_dir / "shards", torch.randn(4, 16, 1, 4, 4, generator=g),
                  [torch.randn(3, TEXT_WIDTH, generator=g) for _ in range(4)], negative_context=torch.zeros(1, TEXT_WIDTH))  # fmt: skip
    out = distill(nodes, teacher=model, teacher_name="none", data_folder="shards", prompts="", mode="lora",
                  stage1_iterations=1, stage2_iterations=1)
    patcher, path = out.result
    assert tmd_core.read_patch_info(path)["lora"]["full_tensors"] == 0
    ref = tmd_core.load_patched(path, tiny_wan16(1)).state_dict()
    got = patcher.model.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert all(native[k].untyped_storage().data_ptr() == ptr and torch.equal(native[k], v) for k, (ptr, v) in before.items())
