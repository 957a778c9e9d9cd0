"""load_teacher: every checkpoint layout gives the source model back; bad files fail with clear messages."""

import copy
import hashlib
import json

import pytest
import torch
from helpers_wan import (
    make_tiny_teacher,
    run_teacher,
    save_diffusers_folder,
    save_diffusers_single,
    save_original_layout,
    tiny_inputs,
)
from safetensors.torch import load_file, save_file

from tmd_core.errors import CheckpointError, InputError
from tmd_core.layouts import (
    diffusers_to_original_state_dict,
    infer_wan_config,
    match_shipped_config,
    original_to_diffusers_state_dict,
    shipped_config,
)
from tmd_core.loading import (
    detect_checkpoint_kind,
    load_teacher,
    sidecar_config_path,
    teacher_from_state_dict,
    teacher_sha256,
)

HEADS = {"num_attention_heads": 2}  # the tiny model's heads are 16 wide, not Wan's 128
# Loaded fp32 weights are memory maps of the file; unaligned data can change summation order slightly.
ATOL = 1e-5


@pytest.fixture(scope="module")
def teacher():
    return make_tiny_teacher(seed=0)


@pytest.fixture(scope="module")
def inputs(teacher):
    return tiny_inputs(teacher, batch=2, seed=1)


@pytest.fixture(scope="module")
def reference(teacher, inputs):
    return run_teacher(teacher, *inputs)


def config_of(model):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.config.items() if not k.startswith("_")}


def assert_same_weights(model, source):
    a, b = model.state_dict(), source.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def assert_same_outputs(model, reference, inputs):
    out = run_teacher(model, *inputs)
    assert reference.abs().mean() > 0.1  # the comparison is not between two near-zero tensors
    assert (out - reference).abs().max().item() <= ATOL


# --- every layout gives the source model back ----------------------------------------------------

@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_original_layout_fp32_loads_the_source_model(teacher, inputs, reference, tmp_path, prefix):
    path = save_original_layout(teacher, tmp_path / "wan.safetensors", prefix=prefix)
    assert detect_checkpoint_kind(path) == "wan-original"
    model = load_teacher(path, config=HEADS)
    assert config_of(model) == config_of(teacher)
    assert_same_weights(model, teacher)
    assert_same_outputs(model, reference, inputs)
    assert not model.training


def cast_params(model, dtype):
    """A copy with parameters in `dtype` and fp32 rope tables, as the loader builds it (Module.to would
    also round the rope tables)."""
    out = copy.deepcopy(model)
    for p in out.parameters():
        p.data = p.data.to(dtype)
    return out


@pytest.mark.parametrize("storage", [torch.float16, torch.bfloat16])
def test_half_storage_keeps_its_dtype_unless_one_is_given(teacher, inputs, tmp_path, storage):
    path = save_original_layout(teacher, tmp_path / "wan.safetensors", prefix="model.diffusion_model.", dtype=storage)
    source = cast_params(teacher, storage)

    kept = load_teacher(path, config=HEADS)
    assert {p.dtype for p in kept.parameters()} == {storage}
    assert_same_weights(kept, source)
    ref = run_teacher(source, *inputs)
    assert (run_teacher(kept, *inputs) - ref).abs().max().item() <= 1e-2 * ref.abs().max().item()

    upcast = load_teacher(path, config=HEADS, dtype=torch.float32)
    rounded = cast_params(source, torch.float32)
    assert_same_weights(upcast, rounded)
    # Cast copies are fresh allocations: same weights, same kernels, bitwise the same output.
    assert torch.equal(run_teacher(upcast, *inputs), run_teacher(rounded, *inputs))


def test_diffusers_single_file(teacher, inputs, reference, tmp_path):
    path = save_diffusers_single(teacher, tmp_path / "wan_diffusers.safetensors")
    assert detect_checkpoint_kind(path) == "wan-diffusers"
    model = load_teacher(path, config=HEADS)
    assert_same_weights(model, teacher)
    assert_same_outputs(model, reference, inputs)


@pytest.mark.parametrize("shard", [None, "20KB"])
def test_diffusers_folder_plain_and_sharded(teacher, inputs, reference, tmp_path, shard):
    folder = save_diffusers_folder(teacher, tmp_path / "transformer", max_shard_size=shard)
    shards = sorted(folder.glob("*.safetensors"))
    if shard:
        assert (folder / "diffusion_pytorch_model.safetensors.index.json").is_file() and len(shards) > 2
    # The folder's config.json carries the head count: no config argument needed.
    for path in (folder, tmp_path):  # the transformer folder itself, or a pipeline root holding transformer/
        assert detect_checkpoint_kind(path) == "wan-diffusers-folder"
        model = load_teacher(path)
        assert config_of(model) == config_of(teacher)
        assert_same_weights(model, teacher)
        assert_same_outputs(model, reference, inputs)


def test_comfy_file_and_its_diffusers_conversion_agree(teacher, inputs, tmp_path):
    comfy = save_original_layout(teacher, tmp_path / "comfy.safetensors", prefix="model.diffusion_model.")
    converted = original_to_diffusers_state_dict(load_file(comfy))
    save_file(converted, str(tmp_path / "converted.safetensors"))
    a = load_teacher(comfy, config=HEADS)
    b = load_teacher(tmp_path / "converted.safetensors", config=HEADS)
    assert_same_weights(a, b)
    assert (run_teacher(a, *inputs) - run_teacher(b, *inputs)).abs().max().item() <= ATOL


def test_sidecar_config_replaces_the_config_argument(teacher, inputs, reference, tmp_path):
    path = save_original_layout(teacher, tmp_path / "tiny.safetensors", sidecar=True)
    assert sidecar_config_path(path).name == "tiny.config.json"
    assert_same_outputs(load_teacher(path), reference, inputs)


def test_rope_tables_are_recomputed_for_real(teacher, tmp_path):
    model = load_teacher(save_diffusers_single(teacher, tmp_path / "w.safetensors"), config=HEADS)
    for name, buf in model.rope.named_buffers():
        assert not buf.is_meta
        assert torch.equal(buf, getattr(teacher.rope, name))


def test_mixed_dtype_file_is_made_uniform(teacher, tmp_path):
    sd = {k: v.to(torch.bfloat16) for k, v in teacher.state_dict().items()}
    sd["scale_shift_table"] = sd["scale_shift_table"].float()  # an fp32 straggler
    save_file(sd, str(tmp_path / "mixed.safetensors"))
    model = load_teacher(tmp_path / "mixed.safetensors", config=HEADS)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_scaled_fp8_file_is_dequantised(teacher, tmp_path):
    # ComfyUI's "fp8_scaled" files: block matrices in float8 with a per-tensor scale, the rest fp32.
    sd = diffusers_to_original_state_dict(teacher.state_dict())
    fp8 = [k for k, v in sd.items() if k.startswith("blocks.") and v.ndim == 2]
    for k in fp8:
        scale = sd[k].abs().max() / 448.0
        sd[k] = (sd[k] / scale).to(torch.float8_e4m3fn)
        sd[k.replace(".weight", ".scale_weight")] = scale.reshape(1)
    sd["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    save_file(sd, str(tmp_path / "fp8.safetensors"))
    model = load_teacher(tmp_path / "fp8.safetensors", config=HEADS)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # fp8 counts as bf16, the majority
    name = "blocks.1.ffn.0.weight"
    expected = sd[name].to(torch.bfloat16) * sd["blocks.1.ffn.0.scale_weight"].to(torch.bfloat16)
    assert torch.equal(model.blocks[1].ffn.net[0].proj.weight, expected)
    err = (expected.float() - teacher.blocks[1].ffn.net[0].proj.weight).abs().max()
    assert err < 0.1 * teacher.blocks[1].ffn.net[0].proj.weight.abs().max()


def test_native_comfy_model_state_dict(teacher, inputs, reference):
    # A ComfyUI MODEL's state dict: `diffusion_model.` + original names; full checkpoints add a VAE.
    sd = diffusers_to_original_state_dict(teacher.state_dict(), prefix="diffusion_model.")
    sd["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)
    model = teacher_from_state_dict(sd, config=HEADS)
    assert_same_weights(model, teacher)
    assert_same_outputs(model, reference, inputs)


# --- key maps and configs -----------------------------------------------------------------------

def test_key_maps_are_exact_inverses_and_use_wan_names():
    # An FLF2V-style teacher exercises every optional module (image embedder + position embedding).
    model = make_tiny_teacher(seed=3, image_dim=12, added_kv_proj_dim=32, pos_embed_seq_len=6)
    sd = model.state_dict()
    original = diffusers_to_original_state_dict(sd)
    # Names as in the original Wan release and ComfyUI's comfy/ldm/wan/model.py.
    for key in [
        "patch_embedding.weight", "text_embedding.0.weight", "text_embedding.2.bias", "time_embedding.0.weight",
        "time_embedding.2.weight", "time_projection.1.weight", "head.head.weight", "head.modulation",
        "img_emb.proj.0.weight", "img_emb.proj.1.weight", "img_emb.proj.3.bias", "img_emb.proj.4.weight",
        "img_emb.emb_pos", "blocks.3.self_attn.q.weight", "blocks.3.self_attn.o.bias",
        "blocks.3.self_attn.norm_k.weight", "blocks.3.cross_attn.v.weight", "blocks.3.cross_attn.k_img.weight",
        "blocks.3.cross_attn.v_img.bias", "blocks.3.cross_attn.norm_k_img.weight", "blocks.3.norm3.weight",
        "blocks.3.ffn.0.weight", "blocks.3.ffn.2.bias", "blocks.3.modulation",
    ]:
        assert key in original, key
    assert len(original) == len(sd)
    back = original_to_diffusers_state_dict(original)
    assert back.keys() == sd.keys() and all(back[k] is sd[k] for k in sd)
    cfg = infer_wan_config(original, num_attention_heads=2)
    assert (cfg["image_dim"], cfg["added_kv_proj_dim"], cfg["pos_embed_seq_len"]) == (12, 32, 6)
    assert cfg == config_of(model)


@pytest.mark.parametrize("name", ["wan21_t2v_1.3b", "wan21_t2v_14b"])
def test_shipped_config_equals_inference_from_real_shapes(name):
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):  # the real architecture, no weights allocated
        sd = WanTransformer3DModel(**shipped_config(name)).state_dict()
    for layout in (sd, diffusers_to_original_state_dict(sd, prefix="model.diffusion_model.")):
        assert infer_wan_config(layout) == shipped_config(name)
    assert match_shipped_config(infer_wan_config(sd)) == name


def test_1p3b_config_values():
    cfg = shipped_config("wan21_t2v_1.3b")
    assert cfg["num_attention_heads"] * cfg["attention_head_dim"] == 1536
    assert (cfg["num_layers"], cfg["ffn_dim"], cfg["text_dim"], cfg["freq_dim"]) == (30, 8960, 4096, 256)
    assert cfg["cross_attn_norm"] is True and cfg["qk_norm"] == "rms_norm_across_heads"


def test_cross_attn_norm_is_read_from_the_norm3_weight():
    model = make_tiny_teacher(seed=0, cross_attn_norm=False)
    original = diffusers_to_original_state_dict(model.state_dict())
    assert not any(".norm3." in k for k in original)
    assert infer_wan_config(original, num_attention_heads=2)["cross_attn_norm"] is False


# --- provenance ---------------------------------------------------------------------------------

def test_sha256_is_streamed_file_digest_and_folder_digest_tracks_weights(teacher, tmp_path):
    path = save_diffusers_single(teacher, tmp_path / "w.safetensors")
    assert teacher_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    a = save_diffusers_folder(teacher, tmp_path / "a")
    b = save_diffusers_folder(make_tiny_teacher(seed=1), tmp_path / "b")
    assert teacher_sha256(a) == teacher_sha256(a) != teacher_sha256(b)


# --- errors -------------------------------------------------------------------------------------

def test_missing_path():
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nowhere.safetensors"):
        load_teacher("/nonexistent/nowhere.safetensors")


def test_tiny_heads_cannot_be_inferred_without_a_config(teacher, tmp_path):
    path = save_original_layout(teacher, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"32-wide .* not a multiple of 128.*num_attention_heads"):
        load_teacher(path)


def test_missing_and_unexpected_weights(teacher, tmp_path):
    sd = diffusers_to_original_state_dict(teacher.state_dict())
    missing = {k: v for k, v in sd.items() if k != "blocks.2.cross_attn.k.weight"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"lacks 1 of the .*blocks\.2\.attn2\.to_k\.weight.*incomplete"):
        load_teacher(tmp_path / "missing.safetensors", config=HEADS)
    save_file({**sd, "blocks.0.extra.weight": torch.zeros(2)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 weights that .* does not use.*blocks\.0\.extra\.weight"):
        load_teacher(tmp_path / "extra.safetensors", config=HEADS)


def test_config_that_does_not_fit_the_file(teacher, tmp_path):
    path = save_diffusers_single(teacher, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"does not fit the config.*ffn\.net\.0\.proj\.weight: file \(64, 32\)"):
        load_teacher(path, config={**HEADS, "ffn_dim": 96})
    with pytest.raises(InputError, match="'hidden_size'"):
        load_teacher(path, config={"hidden_size": 32})


@pytest.mark.parametrize("keys", [
    ["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.weight"],  # an SD UNet
    ["foo", "bar"],
])
def test_not_a_wan_checkpoint(tmp_path, keys):
    save_file({k: torch.zeros(2) for k in keys}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match=r"not a Wan2\.1 transformer checkpoint: .*expected keys like"):
        detect_checkpoint_kind(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a Wan2.1 transformer checkpoint"):
        load_teacher(tmp_path / "other.safetensors")


def test_tmd_checkpoint_is_sent_to_load_tmd(teacher, tmp_path):
    sd = {f"transformer.{k}": v for k, v in teacher.state_dict().items()}
    sd["fusion.weight"] = torch.zeros(2)
    save_file(sd, str(tmp_path / "student.safetensors"), metadata={"format": "tmd/1"})
    assert detect_checkpoint_kind(tmp_path / "student.safetensors") == "tmd"
    with pytest.raises(CheckpointError, match="is a TMD checkpoint.*load_tmd"):
        load_teacher(tmp_path / "student.safetensors")


def test_truncated_file(teacher, tmp_path):
    data = save_diffusers_single(teacher, tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable .safetensors file.*truncated or corrupt"):
        load_teacher(tmp_path / "cut.safetensors", config=HEADS)


def test_pickles_and_bad_folders_are_refused(teacher, tmp_path):
    (tmp_path / "wan.ckpt").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="only .safetensors checkpoints"):
        load_teacher(tmp_path / "wan.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="folder without config.json"):
        load_teacher(tmp_path / "empty")
    folder = save_diffusers_folder(teacher, tmp_path / "sharded", max_shard_size="20KB")
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    (folder / sorted(set(index["weight_map"].values()))[-1]).unlink()
    with pytest.raises(CheckpointError, match="missing shards .* the download is incomplete"):
        load_teacher(folder)


def test_unsupported_wan_variant(teacher, tmp_path):
    sd = diffusers_to_original_state_dict(teacher.state_dict())
    sd["vace_patch_embedding.weight"] = torch.zeros(32, 4, 1, 2, 2)
    save_file(sd, str(tmp_path / "vace.safetensors"))
    with pytest.raises(CheckpointError, match="is a Wan VACE checkpoint"):
        load_teacher(tmp_path / "vace.safetensors", config=HEADS)


def test_heads_by_wan_rule_for_an_unknown_size_are_said_aloud(tmp_path, caplog):
    # a 128-wide model with 2 heads of 64 (the toy teacher) loaded without its config sidecar: Wan's rule says
    # 1 head; the outputs would be wrong without any error, so the loader warns (found when a copied toy teacher
    # lost its sidecar and silently made wrong training data)
    import logging

    from helpers_wan import make_tiny_teacher, save_diffusers_single

    from tmd_core.loading import load_teacher

    path = tmp_path / "t.safetensors"
    save_diffusers_single(make_tiny_teacher(0, num_attention_heads=2, attention_head_dim=64), path, sidecar=False)
    with caplog.at_level(logging.WARNING, logger="tmd_core.layouts"):
        load_teacher(path)
    assert "heads by Wan's rule" in caplog.text and "config.json" in caplog.text
