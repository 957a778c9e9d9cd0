"""TMDModelLoader / TMDCheckpointInfo: files from the host's `tmd` and `diffusion_models` folders."""

import pytest
import torch
from comfy_fakes import run_node


def load(nodes, ckpt_name, head_blocks=5, dtype="default"):
    out = run_node(nodes.TMDModelLoader, ckpt_name=ckpt_name, head_blocks=head_blocks, dtype=dtype)
    (patcher,) = out.result
    return patcher, out.ui


def test_menu_lists_tmd_checkpoints_then_prefixed_teachers_and_only_safetensors(
    nodes, tmd_file, teacher_file
):
    (tmd_file.parent / "notes.txt").write_text("not a checkpoint")
    choices = nodes.TMDModelLoader.INPUT_TYPES()["required"]["ckpt_name"][1]["options"]
    assert choices == ["student.safetensors", "diffusion_models/wan/teacher.safetensors"]
    assert nodes.TMDCheckpointInfo.INPUT_TYPES()["required"]["ckpt_name"][1]["options"] == choices


def test_loads_a_tmd_checkpoint_under_model_management_with_its_info(nodes, host, tmd_file):
    import tmd_core

    patcher, ui = load(
        nodes, "student.safetensors", head_blocks=3
    )  # head_blocks is the file's, not the widget's
    assert isinstance(patcher, host.model_patcher.ModelPatcher)
    assert patcher.load_device == patcher.offload_device == torch.device("cpu")
    model = patcher.model
    assert (model.head_blocks, model.num_layers) == (2, 4)
    assert isinstance(model.latent_format, host.latent_formats.Wan21)  # what latent_preview needs
    ref = tmd_core.load_tmd(tmd_file).state_dict()
    got = model.state_dict()
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    assert ui == {"tmd_info": [{"head_blocks": 2, "num_layers": 4, "outer_steps": 2, "inner_steps": 2,
                                "trained": False, "ckpt_name": "student.safetensors", "kind": "tmd"}]}  # fmt: skip


def test_splits_a_plain_teacher_with_head_blocks(nodes, teacher_file, tiny_wan16):
    patcher, ui = load(nodes, "diffusion_models/wan/teacher.safetensors", head_blocks=3)
    model = patcher.model
    assert (model.head_blocks, model.num_layers) == (3, 4)
    teacher = tiny_wan16(1).state_dict()
    got = model.transformer.state_dict()
    assert all(torch.equal(got[k], teacher[k]) for k in teacher)  # converted from ComfyUI's key layout
    info = ui["tmd_info"][0]
    assert (info["kind"], info["head_blocks"], info["trained"]) == ("teacher", 3, False)


def test_dtype_widget_converts_the_weights(nodes, tmd_file):
    patcher, _ = load(nodes, "student.safetensors", dtype="bf16")
    assert {p.dtype for p in patcher.model.parameters()} == {torch.bfloat16}


def test_teacher_split_with_too_many_head_blocks_says_what_fits(nodes, teacher_file):
    with pytest.raises(ValueError, match="head_blocks must be an integer from 1 to 3, got 4: .*teacher.safetensors has 4 blocks"):
        load(nodes, "diffusion_models/wan/teacher.safetensors", head_blocks=4)


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("../diffusion_models/wan/teacher.safetensors", "tmd"),
        ("sub/../../secret.safetensors", "tmd"),
        ("/etc/passwd", "tmd"),
        ("diffusion_models/../tmd/student.safetensors", "diffusion_models"),
        ("diffusion_models/..\\..\\secret.safetensors", "diffusion_models"),
    ],
)
def test_a_name_escaping_its_model_folder_is_refused(nodes, tmd_file, teacher_file, name, folder):
    from comfyui_tmd.tmd_core.errors import InputError

    with pytest.raises(
        InputError, match=f"points outside the {folder} model folder: pick a file listed in the menu"
    ):
        load(nodes, name)


def test_a_missing_file_names_the_folders_searched(nodes, host):
    with pytest.raises(
        ValueError, match=r"'gone.safetensors' not found in the tmd model folders \[.*models/tmd"
    ):
        load(nodes, "gone.safetensors")


def test_checkpoint_info_shows_the_split_and_schedule(nodes, tmd_file):
    out = run_node(nodes.TMDCheckpointInfo, ckpt_name="student.safetensors")
    (text,) = out.result
    assert out.ui == {"text": [text]}
    assert "format      tmd/1" in text
    assert "backbone 2 blocks + flow head H = 2" in text
    assert "16 latent channels" in text


def test_checkpoint_info_route_reads_h_and_l_from_the_header(nodes, tmd_file, teacher_file):
    # what GET /tmd/checkpoint_info answers (nodes/routes.py): the loader's tmd_info, without loading weights
    assert nodes.routes.checkpoint_info("student.safetensors") == {
        "ckpt_name": "student.safetensors", "kind": "tmd", "num_layers": 4, "head_blocks": 2}
    teacher = nodes.routes.checkpoint_info("diffusion_models/wan/teacher.safetensors")
    assert teacher["kind"] == "teacher" and teacher["head_blocks"] is None and teacher["num_layers"] >= 2


@pytest.fixture
def patch_in_tmd(host, tiny_wan16):
    """models/tmd/patch.safetensors: a rank-2 TMD patch (H = 1 of L = 4) of `tiny_wan16()`."""
    from helpers_wan import moved_student

    from tmd_core.patch import extract_patch_from_models
    from tmd_core.patch_file import save_patch

    teacher = tiny_wan16()
    (host.models_dir / "tmd").mkdir(parents=True, exist_ok=True)
    return save_patch(extract_patch_from_models(moved_student(teacher), teacher, 2), host.models_dir / "tmd" / "patch.safetensors")


def test_a_patch_is_refused_with_the_node_that_applies_it(nodes, patch_in_tmd):
    assert "patch.safetensors" in nodes.TMDModelLoader.INPUT_TYPES()["required"]["ckpt_name"][1]["options"]
    with pytest.raises(ValueError, match="patch.safetensors is a TMD patch, which needs the teacher MODEL it was made "
                                         "for: .*UNETLoader .*TMD Apply to MODEL \\(native\\) \\(TMDApplyToModel\\)"):
        load(nodes, "patch.safetensors")


def test_checkpoint_info_route_gives_a_patch_its_split(nodes, patch_in_tmd):
    assert nodes.routes.checkpoint_info("patch.safetensors") == {
        "ckpt_name": "patch.safetensors", "kind": "patch", "num_layers": 4, "head_blocks": 1}


@pytest.mark.parametrize("name", ["../student.safetensors", "nope.safetensors", "diffusion_models/../../etc/passwd"])
def test_checkpoint_info_route_refuses_names_outside_the_menu(nodes, tmd_file, teacher_file, name):
    with pytest.raises(ValueError, match="not in the TMD loader's menu"):  # the pack's InputError
        nodes.routes.checkpoint_info(name)
