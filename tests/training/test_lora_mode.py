"""LoRA-mode distillation (docs/design.md §7, tmd_core/lora.py): one copy of the base weights serves teacher,
student and fake score; the student's LoRA + fusion + gap embedding train; the result is a TMD patch."""

import json
from pathlib import Path

import pytest
import torch
from helpers_wan import make_tiny_teacher, tiny_inputs, tiny_training_world
from safetensors import safe_open

from tmd_core.errors import ConfigError
from tmd_core.lora import FAKE_ADAPTER, STUDENT_ADAPTER, add_lora, patch_from_lora
from tmd_core.model import TMDModel, wan_timestep
from tmd_core.patch_file import load_patch, load_patched, read_patch_info, save_patch
from tmd_core.training.builders import build_fake_score, build_stage1_student, load_frozen_teacher
from tmd_core.training.config import check_run, load_config
from tmd_core.training.loop import run_distill
from tmd_core.training.stage1_tmmf import tmmf_loss
from tmd_core.training.stage2_dmd import critic_loss, generator_loss, generator_sample
from tmd_core.training.state import read_state_header


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny teacher file and 6 training samples (latents 4x1x8x8, 3-5 text tokens, a negative prompt)."""
    return tiny_training_world(tmp_path_factory.mktemp("world"), 6)


def lora_cfg(world, out, **over):
    cfg = load_config("tiny", model={"teacher": str(world["teacher_path"]), "mode": "lora", "lora_rank": 4},
                      data=str(world["data"]), output_dir=str(out))
    cfg.stages, cfg.stage1.iterations, cfg.stage2.iterations, cfg.stage2.student_every = ("stage1", "stage2"), 3, 3, 2
    cfg.checkpoint_every, cfg.batch_size = 100, 2
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def teacher_out(model, x, t, ctx):
    with torch.no_grad():
        return model(x, timestep=wan_timestep(t, x.shape[0], x.device), encoder_hidden_states=ctx,
                     return_dict=False)[0].float()


def head_out(student, x, t, ctx, y_s, r):
    with torch.no_grad():
        return student.head(student.backbone(x, t, ctx), y_s, t, r)


def networks(world, cfg):
    teacher = load_frozen_teacher(cfg, None, "cpu")
    torch.manual_seed(0)
    return teacher, build_stage1_student(cfg, teacher, "cpu"), build_fake_score(cfg, teacher, "cpu")


def moved(module, seed=5, scale=0.05):
    """Every trained parameter set to seeded non-zero values (a LoRA-mode student after some training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return module


@pytest.mark.parametrize("t", [0.3, 0.999])
def test_fresh_lora_student_and_fake_score_equal_the_teacher(world, tmp_path, t):
    """docs/method.md §2.3 in LoRA mode: B = 0 and the zero fusion make head(fuse(B(x_t, t), y_s, s=t), t, r) the
    teacher's output for any y_s and r; the fake score (B = 0) is the teacher too."""
    teacher, student, fake = networks(world, lora_cfg(world, tmp_path))
    x, ctx = tiny_inputs(teacher, batch=2, frames=1, seed=3)
    ref = teacher_out(teacher, x, t, ctx)
    y_s = torch.randn_like(x)
    assert torch.allclose(head_out(student, x, t, ctx, y_s, 0.0), ref, atol=1e-5, rtol=0)
    assert torch.equal(teacher_out(fake, x, t, ctx), ref)
    a = student.transformer.blocks[0].attn1.to_q.lora_A[STUDENT_ADAPTER].weight
    assert a.abs().sum() > 0  # A is random (peft's init), B is zero: the product, not the factors, is zero


def test_one_copy_of_the_base_weights(world, tmp_path):
    """Every base tensor of student and fake score is the teacher's own storage; only LoRA/fusion/gap are new."""
    teacher, student, fake = networks(world, lora_cfg(world, tmp_path))
    base = {p.data_ptr() for p in teacher.parameters()}
    q = teacher.blocks[0].attn1.to_q.weight
    assert student.transformer.blocks[0].attn1.to_q.base_layer.weight is q
    assert fake.blocks[0].attn1.to_q.base_layer.weight is q
    for name, net in (("student", student), ("fake", fake)):
        new = [n for n, p in net.named_parameters() if p.data_ptr() not in base]
        assert new and all(".lora_" in n or n.startswith(("fusion.", "emb_gap.")) for n in new), (name, new[:4])
        shared = [p for p in net.parameters() if p.data_ptr() in base]
        assert len(shared) == len(list(teacher.parameters())) and not any(p.requires_grad for p in shared)
    lora_s = [n for n, _ in student.named_parameters() if ".lora_" in n]
    assert lora_s and all(f".{STUDENT_ADAPTER}." in n for n in lora_s)
    assert all(f".{FAKE_ADAPTER}." in n for n, _ in fake.named_parameters() if ".lora_" in n)
    assert not any(".lora_" in n for n, _ in teacher.named_parameters())  # the teacher's tree has no adapters


def test_only_lora_fusion_and_gap_receive_gradients(world, tmp_path):
    """Stage 1 and both stage-2 losses: gradients reach the LoRA factors (student's or fake's), the fusion layer
    and the gap embedding, never a base weight (shared with the teacher) and never the other network's LoRA."""
    from tmd_core.training.data import ShardDataset, ShardReader

    cfg = lora_cfg(world, tmp_path)
    cfg.stage2.gan_weight = 0.0  # the discriminator is a full network in both modes
    teacher, student, fake = networks(world, cfg)
    batch = ShardReader(ShardDataset(cfg.data), 2, seed=0).next_batch()
    g = torch.Generator().manual_seed(0)

    def grads(net):
        return {n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}

    def clear():
        for net in (teacher, student, fake):
            net.zero_grad(set_to_none=True)

    tmmf_loss(student, batch, cfg.schedule, cfg.stage1, g)[0].backward()
    got = grads(student)
    assert any(".lora_B." in n for n in got) and any(n.startswith("fusion.") for n in got)
    assert any(n.startswith("emb_gap.") for n in got)
    assert all(".lora_" in n or n.startswith(("fusion.", "emb_gap.")) for n in got), sorted(got)[:4]
    assert not grads(teacher) and not grads(fake)
    clear()
    x_hat, _ = generator_sample(student, batch, cfg.schedule, cfg.stage2, g)
    generator_loss(x_hat, teacher, fake, None, batch, cfg.stage2, g)[0].backward()
    assert grads(student) and not grads(teacher) and not grads(fake)
    clear()
    critic_loss(x_hat.detach(), fake, None, teacher, batch, cfg.stage2, g)[0].backward()
    got = grads(fake)
    assert got and all(f".lora_A.{FAKE_ADAPTER}." in n or f".lora_B.{FAKE_ADAPTER}." in n for n in got)
    assert not grads(teacher) and not grads(student)


def test_patch_from_a_lora_student_equals_the_student(world, tmp_path):
    """The patch written from a LoRA-mode student, applied onto the teacher (W + B'A merged), gives the student's
    outputs within 1e-5 (fp32); alpha != rank is folded into B'."""
    cfg = lora_cfg(world, tmp_path)
    cfg.model.lora_alpha = 2.0  # scale alpha / r = 0.5
    teacher, student, _ = networks(world, cfg)
    moved(student)
    from tmd_core.wan_build import transformer_config_dict

    path = save_patch(patch_from_lora(student, transformer_config_dict(teacher), rank=4), tmp_path / "p.safetensors")
    info = read_patch_info(path)
    assert info["lora"]["rank"] == 4 and info["lora"]["full_tensors"] == 0
    assert info["lora"]["lora_tensors"] == 4 * 10  # 4 blocks x (4 self-attn + 4 cross-attn + 2 FFN linears)
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        assert float(f.get_tensor("diffusion_model.blocks.0.self_attn.q.alpha")) == 4.0
    assert "diffusion_model.blocks.3.ffn.2.lora_B.weight" in keys and "diffusion_model.blocks.1.cross_attn.o.lora_A.weight" in keys
    patched = load_patched(path, make_tiny_teacher(0))
    x, ctx = tiny_inputs(teacher, batch=2, frames=1, seed=4)
    y_s = torch.randn_like(x)
    for t, r in ((0.9, 0.4), (0.5, 0.5)):
        a, b = head_out(student, x, t, ctx, y_s, r), head_out(patched, x, t, ctx, y_s, r)
        assert (a - b).abs().max() <= 1e-5
    assert (head_out(student, x, 0.9, ctx, y_s, 0.4) - teacher_out(teacher, x, 0.9, ctx)).abs().max() > 1e-2


def test_a_lora_run_writes_a_patch_and_leaves_the_teacher_unchanged(world, tmp_path):
    """Stage 1 + stage 2 in LoRA mode (with EMA) on an in-process teacher: the teacher's weights are bit-identical
    after training, the stage-1 result and the final result are patches, the training state holds no base weight,
    and the patch on the teacher equals the run's student."""
    teacher = make_tiny_teacher(0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = lora_cfg(world, tmp_path / "run", ema_decay=0.5)
    cfg.model.teacher = ""
    path = run_distill(cfg, teacher=teacher)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    for p in (path, tmp_path / "run" / "stage1.safetensors"):
        info = read_patch_info(p)
        assert info["lora"]["full_tensors"] == 0 and info["lora"]["rank"] == 4
    prov = read_patch_info(path)["provenance"]
    assert prov["iterations"] == {"stage1": 3, "stage2": 3} and prov["lora_mode"]["rank"] == 4
    patch = load_patch(path)
    assert patch.extra["fusion.fc2.weight"].abs().sum() > 0  # trained: the zero-initialised projection moved
    assert max(b.abs().max() for _, b in patch.lora.values()) > 0
    with safe_open(str(tmp_path / "run" / "state-stage2.safetensors"), "pt") as f:
        models = [k for k in f.keys() if k.startswith("model.")]
    assert models and all(".lora_" in k or ".fusion." in k or ".emb_gap." in k or k.startswith("model.discriminator.")
                          for k in models), models[:4]


def test_stop_and_resume_a_lora_run_reproduces_it(world, tmp_path):
    straight = run_distill(lora_cfg(world, tmp_path / "a", ema_decay=0.5))
    cfg = lora_cfg(world, tmp_path / "b", ema_decay=0.5)
    calls = {"n": 0}

    def stop():  # after stage-2 step 1 (3 stage-1 steps before it)
        calls["n"] += 1
        return calls["n"] == 4

    partial = run_distill(cfg, should_stop=stop)
    assert partial.name == "tiny.partial.safetensors" and read_patch_info(partial)["provenance"]["complete"] is False
    assert read_state_header(tmp_path / "b" / "state-stage2.safetensors")["step"] == "1"
    resumed = run_distill(cfg, resume=True)

    def records(out):
        lines = (Path(out) / "log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in ("it_s", "mem_mb")} for x in lines
                if '"event"' not in x]

    assert records(tmp_path / "a") == records(tmp_path / "b")
    a, b = load_patch(straight), load_patch(resumed)
    assert a.lora.keys() == b.lora.keys() and all(torch.equal(a.lora[k][i], b.lora[k][i]) for k in a.lora for i in (0, 1))
    assert all(torch.equal(a.extra[k], b.extra[k]) for k in a.extra)


def test_stage2_continues_a_lora_patch(world, tmp_path):
    """model.student_init in LoRA mode: the stage-1 patch loads back into a LoRA student exactly (B'·r/alpha)."""
    first = run_distill(lora_cfg(world, tmp_path / "s1", stages=("stage1",)))
    cfg = lora_cfg(world, tmp_path / "s2", stages=("stage2",))
    cfg.model.student_init = str(first)
    teacher = load_frozen_teacher(cfg, None, "cpu")
    from tmd_core.training.builders import build_stage2_student

    student = build_stage2_student(cfg, teacher, "cpu", None)
    x, ctx = tiny_inputs(teacher, batch=1, frames=1, seed=2)
    y_s = torch.randn_like(x)
    ref = load_patched(first, make_tiny_teacher(0))
    assert (head_out(student, x, 0.7, ctx, y_s, 0.2) - head_out(ref, x, 0.7, ctx, y_s, 0.2)).abs().max() <= 1e-5


@pytest.mark.parametrize("change, message", [
    ({"lora_rank": 0}, "model.lora_rank must be an integer of 1 or more"),
    ({"lora_alpha": -1.0}, "model.lora_alpha must be a positive number"),
    ({"lora_targets": ("ffn", "mlp")}, "model.lora_targets must be a non-empty list"),
    ({"mode": "qlora"}, "model.mode must be one of 'full', 'lora'"),
])
def test_bad_lora_settings_are_refused(world, tmp_path, change, message):
    cfg = lora_cfg(world, tmp_path / "run")
    for k, v in change.items():
        setattr(cfg.model, k, v)
    with pytest.raises(ConfigError, match=message):
        check_run(cfg)


def test_lora_mode_refuses_the_dmd_baseline_and_a_full_student_init(world, tmp_path):
    cfg = lora_cfg(world, tmp_path / "run", stages=("stage2",))
    cfg.stage2.student_kind = "dmd"
    with pytest.raises(ConfigError, match="DMD2-v baseline .* trains in model.mode full"):
        check_run(cfg)
    full = run_distill(load_config("tiny", model={"teacher": str(world["teacher_path"])}, data=str(world["data"]),
                                   output_dir=str(tmp_path / "full"), stages=("stage1",), stage1={"iterations": 1}))
    cfg = lora_cfg(world, tmp_path / "run2", stages=("stage2",))
    cfg.model.student_init = str(full)
    with pytest.raises(ConfigError, match="a full student continues in model.mode full"):
        check_run(cfg)
    cfg.model.student_init = str(run_distill(lora_cfg(world, tmp_path / "l", stages=("stage1",))))
    cfg.model.lora_rank = 8
    with pytest.raises(ConfigError, match="has LoRA rank 4, model.lora_rank is 8"):
        check_run(cfg)


def test_lora_mode_refuses_fsdp2(world, tmp_path):
    from tmd_core.training.sharding import check_placement

    with pytest.raises(ConfigError, match="model.mode lora shares one copy .* launch with DDP"):
        check_placement(lora_cfg(world, tmp_path), "fsdp2")
    check_placement(lora_cfg(world, tmp_path), "ddp")  # allowed


def test_memory_plan_counts_the_base_once_in_lora_mode():
    """`tmd distill --plan` in LoRA mode (exact 1.3B architecture on meta): student and fake score rows hold only
    what they train; the one base copy is the teacher's row."""
    from tmd_core.training.memory_plan import PlanSettings, memory_plan, preset_architecture

    tcfg = preset_architecture("wan21_1p3b")
    full_cfg = load_config("wan21_1p3b")
    lora = load_config("wan21_1p3b", model={"mode": "lora", "lora_rank": 64})
    s = PlanSettings(processes=1, sharding="full")
    full, low = memory_plan(full_cfg, tcfg, s), memory_plan(lora, tcfg, s)
    assert low["counts"]["teacher"] == full["counts"]["teacher"]
    # rank 64 on 30 blocks x (8 attention linears 1536 -> 1536 and the FFN's 1536 <-> 8960): 64 x 30 x (8 x 3072 + 2 x 10496)
    assert low["counts"]["fake_score"] == 64 * 30 * (8 * 3072 + 2 * 10496)
    assert low["counts"]["student"] - low["counts"]["fake_score"] == full["counts"]["student"] - full["counts"]["teacher"]
    assert low["peak"] < 0.15 * full["peak"]
    with pytest.raises(ConfigError, match="--sharding full"):
        memory_plan(lora, tcfg, PlanSettings(processes=2, sharding="sharded"))


def test_lora_model_at_init_without_peft_names_is_a_view():
    """add_lora leaves the teacher's own module tree as it was (no peft layers injected into it)."""
    teacher = make_tiny_teacher(0).requires_grad_(False)
    kinds = [type(m).__name__ for m in teacher.modules()]
    view = add_lora(teacher, "student", 2, None, ("ffn",))
    assert [type(m).__name__ for m in teacher.modules()] == kinds
    assert sum(".lora_A." in n for n, _ in view.named_parameters()) == 2 * 4  # ffn only: 2 linears x 4 blocks
    assert isinstance(TMDModel.from_teacher(view, head_blocks=1), TMDModel)


@pytest.mark.slow
def test_two_ddp_processes_reproduce_one_process_in_lora_mode(world, tmp_path):
    """DDP (accelerate launch --multi_gpu, gloo on the CPU) in LoRA mode: each loss module holds the LoRA it trains
    (and the frozen shared base), so DDP averages exactly those gradients; 2 processes reproduce 1 (batch 2)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sets = {"model.mode": "lora", "model.lora_rank": 4, "stage1.iterations": 3, "stage2.iterations": 3,
            "stage2.student_every": 2, "batch_size": 2, "checkpoint_every": 100, "log_every": 1}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           "-m", "tmd_core", "distill", "--preset", "tiny", "--teacher", str(world["teacher_path"]),
           "--data", str(world["data"]), "--output-dir", str(tmp_path / "ddp"),
           *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = run_distill(lora_cfg(world, tmp_path / "one", log_every=1))

    def records(out):
        lines = (Path(out) / "log.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines if '"event"' not in x]

    ra, rb = records(tmp_path / "ddp"), records(tmp_path / "one")
    assert [(r["stage"], r["step"]) for r in ra] == [(r["stage"], r["step"]) for r in rb] and len(ra) == 6
    for x, y in zip(ra, rb):
        for k in x:
            if "loss" in k:
                assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-7), (x["stage"], x["step"], k)
    a, b = load_patch(tmp_path / "ddp" / "tiny.safetensors"), load_patch(one)
    worst = max((a.lora[k][i] - b.lora[k][i]).abs().max().item() for k in a.lora for i in (0, 1))
    assert worst <= 1e-5 and max((a.extra[k] - b.extra[k]).abs().max().item() for k in a.extra) <= 1e-5


def test_gradient_checkpointing_in_lora_mode_changes_nothing(world, tmp_path):
    """Checkpointed blocks are recomputed during the backward, which in stage 2 runs through the student's blocks
    and the teacher's (GAN term) at once: with the networks as separate trees (no global active adapter) the
    recompute uses each network's own weights, so the losses equal those of a run without checkpointing."""
    plain = run_distill(lora_cfg(world, tmp_path / "a", log_every=1))
    ckpt = run_distill(lora_cfg(world, tmp_path / "b", log_every=1, gradient_checkpointing=True))

    def records(out):
        lines = (Path(out) / "log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if "loss" in k} for x in lines if '"event"' not in x]

    ra, rb = records(tmp_path / "a"), records(tmp_path / "b")
    assert len(ra) == 6 and all(x.keys() == y.keys() for x, y in zip(ra, rb))
    for x, y in zip(ra, rb):
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-7), k
    a, b = load_patch(plain), load_patch(ckpt)
    assert max((a.lora[k][1] - b.lora[k][1]).abs().max().item() for k in a.lora) <= 1e-6
