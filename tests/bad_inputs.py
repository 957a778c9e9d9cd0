"""The table of bad inputs (docs/errors.md): every user-facing surface, one row per input, with what the answer
must say. Run by tests/test_bad_inputs.py (command line, library, training config) and
tests/nodes/test_bad_inputs_nodes.py (ComfyUI nodes); docs/errors.md is rendered from the same rows by
`python scripts/errors_table.py`.

A row is Case(id, surface, input, run, expect): `run(w)` is the argv of `tmd` (surface "cli"/"config"), or a
callable of the world `w` that must raise a TMDError (surface "api"), or of (`w`, nodes) (surface "node").
`expect` are fragments the message must contain; the first names the input.
"""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from helpers_wan import make_tiny_teacher, save_diffusers_single
from safetensors.torch import load_file, save_file

RO = "/proc/sys"  # a folder no one can write to, root included (its file system refuses new files)
BIG = str(2**63)


@dataclass
class Case:
    id: str
    surface: str  # "cli" | "config" | "api" | "node"
    input: str  # the bad input, as a user would describe it (docs/errors.md)
    run: object
    expect: tuple[str, ...]


def _rewrite_metadata(src: Path, dst: Path, **changes) -> Path:
    """A copy of a safetensors file with metadata fields changed (None deletes one)."""
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


def build_world(root: Path) -> SimpleNamespace:
    """Tiny files for every case (milliseconds to write, nothing is ever sampled)."""
    import tmd_core
    from tmd_core.toy.autoencoder import ToyVAE, VAEConfig, save_vae
    from tmd_core.training.make_data import write_latents

    root = Path(root)
    w = SimpleNamespace(root=root)
    teacher = make_tiny_teacher(0)  # 4 layers, 4 channels, 24-wide text
    w.teacher = save_diffusers_single(teacher, root / "teacher.safetensors", sidecar=True)
    w.student = tmd_core.save_tmd(tmd_core.TMDModel.from_teacher(teacher, head_blocks=1), root / "student.safetensors")
    tmd_cfg = tmd_core.read_tmd_info(w.student)["tmd_config"]
    w.head99 = _rewrite_metadata(w.student, root / "head99.safetensors", tmd_config=json.dumps({**tmd_cfg, "head_blocks": 99}))
    w.layers5 = _rewrite_metadata(w.student, root / "layers5.safetensors", tmd_config=json.dumps({**tmd_cfg, "num_layers": 5}))
    w.foreign = _rewrite_metadata(w.student, root / "foreign.safetensors",  # distilled from another teacher
                                  provenance=json.dumps({"teacher": "other.safetensors", "teacher_sha256": "ab" * 32}))
    w.no_cfg = _rewrite_metadata(w.student, root / "no_cfg.safetensors", tmd_config=None)
    w.broken_cfg = _rewrite_metadata(w.student, root / "broken_cfg.safetensors", tmd_config='{"num_layers": 4,')
    toy = make_tiny_teacher(3, in_channels=16, out_channels=16, text_dim=32, num_layers=2, patch_size=[1, 1, 1])
    w.toy_teacher = save_diffusers_single(toy, root / "toy_teacher.safetensors", sidecar=True)
    w.toy_student = tmd_core.save_tmd(tmd_core.TMDModel.from_teacher(toy, head_blocks=1), root / "toy_student.safetensors")
    torch.manual_seed(0)
    w.vae = save_vae(ToyVAE(VAEConfig(width=16)).eval(), root / "toy_vae.safetensors")
    g = torch.Generator().manual_seed(0)
    w.ctx = root / "ctx.safetensors"
    save_file({"context": torch.randn(1, 5, 24, generator=g)}, str(w.ctx))
    w.ctx_nan = root / "ctx_nan.safetensors"
    save_file({"context": torch.full((1, 5, 24), float("nan"))}, str(w.ctx_nan))
    w.ctx_wide = root / "ctx_wide.safetensors"
    save_file({"context": torch.randn(1, 5, 4096, generator=g)}, str(w.ctx_wide))
    w.ctx_nokey = root / "ctx_nokey.safetensors"
    save_file({"embeddings": torch.randn(1, 5, 24, generator=g)}, str(w.ctx_nokey))
    w.empty = root / "empty.safetensors"
    w.empty.write_bytes(b"")
    w.pickle = root / "weights.pt"
    w.pickle.write_bytes(pickle.dumps({"context": [1.0, 2.0]}))
    w.pickle_named = root / "pickle.safetensors"  # a pickle behind a .safetensors name
    w.pickle_named.write_bytes(pickle.dumps({"context": [1.0, 2.0]}))
    w.garbage = root / "garbage.safetensors"
    w.garbage.write_bytes(bytes(range(256)) * 64)
    w.folder = root / "a_folder"
    w.folder.mkdir()
    w.existing = root / "existing.safetensors"
    w.existing.write_bytes(b"x")
    contexts = [torch.randn(3, 24, generator=g) for _ in range(4)]
    w.data = write_latents(root / "data", torch.randn(4, 4, 1, 8, 8, generator=g), contexts, ["p"] * 4,
                           negative_context=torch.randn(2, 24, generator=g), shard_size=4)
    w.shards16 = write_latents(root / "shards16", torch.randn(2, 16, 1, 4, 4, generator=g),  # the node tests' teacher
                               [torch.randn(3, 24, generator=g) for _ in range(2)], ["p"] * 2)
    w.bad_index = root / "bad_index"
    w.bad_index.mkdir()
    (w.bad_index / "index.json").write_text("{not json")
    w.yaml_broken = root / "broken.yaml"
    w.yaml_broken.write_text("stage1:\n  lr: [1e-5\n")
    w.yaml_python = root / "python.yaml"
    w.yaml_python.write_text("stage1: !!python/object/apply:os.system ['echo owned']\n")
    w.run_file = root / "run_is_a_file"
    w.run_file.write_text("x")
    w.run_done = root / "run_done"
    w.run_done.mkdir()
    (w.run_done / "state-stage1.safetensors").write_bytes(b"x")
    from tmd_core.patch import extract_patch_from_models
    from tmd_core.patch_file import save_patch

    w.patch = save_patch(extract_patch_from_models(tmd_core.load_tmd(w.student), teacher, 2), root / "patch.safetensors")
    w.patch_nocfg = _rewrite_metadata(w.patch, root / "patch_nocfg.safetensors", tmd_config=None)
    w.workflow = root / "wf.json"
    w.workflow.write_text(json.dumps({"1": {"class_type": "TMDSchedule", "inputs": {}}}))
    return w


def _gen(w, *extra, ckpt="student"):
    return ["generate", str(getattr(w, ckpt)), "--context", str(w.ctx), "--latent-shape", "4,1,8,8",
            "--out", str(w.root / "out" / "x.safetensors"), *extra]


def _toygen(w, *extra):
    return ["generate", str(w.toy_student), "--vae", str(w.vae), "--out", str(w.root / "out" / "toy.safetensors"),
            *extra]


def _distill(w, *sets, extra=()):
    args = ["distill", "--preset", "tiny", "--teacher", str(w.teacher), "--data", str(w.data),
            "--output-dir", str(w.root / "runs" / "r"), "--dry-run", *extra]
    for s in sets:
        args += ["--set", s]
    return args


def _make_data(w, *extra):
    return ["make-data", "--teacher", str(w.teacher), "--embeddings", str(w.ctx), "--latent-shape", "4,1,8,8",
            "--out", str(w.root / "made"), *extra]


def _eval(w, *extra, student="student"):
    return ["eval", "--teacher", str(w.teacher), "--student", str(getattr(w, student)), "--embeddings", str(w.ctx),
            "--latent-shape", "4,1,8,8", "--out", str(w.root / "eval"), *extra]


LONG = "red " * 25000  # a 100,000-character prompt

CASES = [
    # ---- tmd generate: step counts, seeds and CFG (silent before: 0 meant "the default", NaN was sampled)
    Case("gen-outer-0", "cli", "`generate --outer-steps 0`", lambda w: _gen(w, "--outer-steps", "0"),
         ("--outer-steps must be an integer from 1 to 1000, got 0", "leave it out")),
    Case("gen-inner-0", "cli", "`generate --inner-steps 0`", lambda w: _gen(w, "--inner-steps", "0"),
         ("--inner-steps must be an integer from 1 to 1000, got 0",)),
    Case("gen-outer-1e6", "cli", "`generate --outer-steps 1000000`", lambda w: _gen(w, "--outer-steps", "1000000"),
         ("--outer-steps must be an integer from 1 to 1000, got 1000000",)),
    Case("gen-head-0", "cli", "`generate TEACHER --head-blocks 0`",
         lambda w: _gen(w, "--head-blocks", "0", ckpt="teacher"),
         ("--head-blocks must be an integer from 1 to 3, got 0", "the teacher has 4 blocks")),
    Case("gen-head-99", "cli", "`generate TEACHER --head-blocks 99`",
         lambda w: _gen(w, "--head-blocks", "99", ckpt="teacher"), ("--head-blocks must be an integer from 1 to 3",)),
    Case("gen-head-on-student", "cli", "`generate STUDENT --head-blocks 2`", lambda w: _gen(w, "--head-blocks", "2"),
         ("--head-blocks splits a plain teacher", "is a TMD student (H = 1 of 4)")),
    Case("gen-guidance-nan", "cli", "`generate TEACHER --guidance nan`",
         lambda w: _gen(w, "--guidance", "nan", ckpt="teacher"), ("--guidance must be a finite number", "got nan")),
    Case("gen-guidance-inf", "cli", "`generate TEACHER --guidance inf`",
         lambda w: _gen(w, "--guidance", "inf", ckpt="teacher"), ("--guidance must be a finite number", "got inf")),
    Case("gen-guidance-no-negative", "cli", "`generate TEACHER --guidance 3` with no negative context",
         lambda w: _gen(w, "--guidance", "3", ckpt="teacher"), ("--guidance 3 needs a negative context",)),
    Case("gen-shift-0", "cli", "`generate TEACHER --shift 0`", lambda w: _gen(w, "--shift", "0", ckpt="teacher"),
         ("--shift must be a finite number > 0", "got 0.0")),
    Case("gen-teacher-steps-0", "cli", "`generate TEACHER --teacher-steps 0`",
         lambda w: _gen(w, "--teacher-steps", "0", ckpt="teacher"), ("--teacher-steps must be an integer from 1 to 1000",)),
    Case("gen-teacher-flags-on-student", "cli", "`generate STUDENT --teacher-steps 10`",
         lambda w: _gen(w, "--teacher-steps", "10"), ("--teacher-steps does not apply",)),
    Case("gen-outer-on-teacher", "cli", "`generate TEACHER --outer-steps 2` (no --head-blocks)",
         lambda w: _gen(w, "--outer-steps", "2", ckpt="teacher"), ("--outer-steps does not apply", "--head-blocks")),
    Case("gen-seed-negative", "cli", "`generate --seed -1`", lambda w: _gen(w, "--seed", "-1"),
         ("--seed must be an integer from 0 to 4294967295, got -1",)),
    Case("gen-seed-2^63", "cli", "`generate --seed 2**63`", lambda w: _gen(w, "--seed", BIG),
         ("--seed must be an integer from 0 to 4294967295", "would repeat the noise of a smaller one")),
    Case("gen-seed-2^64", "cli", "`generate --seed 2**64`", lambda w: _gen(w, "--seed", str(2**64)),
         ("--seed must be an integer from 0 to 4294967295",)),
    # ---- tmd generate: the checkpoint
    Case("gen-ckpt-missing", "cli", "`generate` with a checkpoint that does not exist",
         lambda w: ["generate", str(w.root / "nope.safetensors"), "--context", str(w.ctx)],
         ("checkpoint not found", "nope.safetensors")),
    Case("gen-ckpt-folder", "cli", "`generate` with a folder (no config.json) as checkpoint",
         lambda w: ["generate", str(w.folder), "--context", str(w.ctx)], ("a_folder is a folder without config.json",)),
    Case("gen-ckpt-pickle", "cli", "`generate` with a pickle (.pt) as checkpoint",
         lambda w: ["generate", str(w.pickle), "--context", str(w.ctx)], ("weights.pt is a .pt file", "never unpickled")),
    Case("gen-ckpt-garbage", "cli", "`generate` with random bytes as checkpoint",
         lambda w: ["generate", str(w.garbage), "--context", str(w.ctx)],
         ("garbage.safetensors is not a readable .safetensors file",)),
    Case("gen-ckpt-head99", "cli", "`generate` with a student whose metadata says head_blocks = 99",
         lambda w: _gen(w, ckpt="head99"), ("head99.safetensors: its tmd_config metadata is impossible",
                                            "head_blocks must be between 1 and 3")),
    # ---- tmd generate: the text context
    Case("gen-context-missing", "cli", "`generate --context` a file that does not exist",
         lambda w: ["generate", str(w.student), "--context", str(w.root / "nope_ctx.safetensors")],
         ("--context: no safetensors file", "nope_ctx.safetensors")),
    Case("gen-context-folder", "cli", "`generate --context` a folder",
         lambda w: ["generate", str(w.student), "--context", str(w.folder)], ("--context:", "is a folder")),
    Case("gen-context-empty", "cli", "`generate --context` an empty file",
         lambda w: ["generate", str(w.student), "--context", str(w.empty)], ("--context:", "is empty (0 bytes)")),
    Case("gen-context-pickle", "cli", "`generate --context` a pickle (.pt)",
         lambda w: ["generate", str(w.student), "--context", str(w.pickle)], ("--context: weights.pt is a pickle",)),
    Case("gen-context-pickle-named", "cli", "`generate --context` a pickle named .safetensors",
         lambda w: ["generate", str(w.student), "--context", str(w.pickle_named)],
         ("--context: pickle.safetensors is not a readable safetensors file",)),
    Case("gen-context-no-key", "cli", "`generate --context` a file without a 'context' tensor",
         lambda w: ["generate", str(w.student), "--context", str(w.ctx_nokey)], ("--context:", "has no 'context' tensor")),
    Case("gen-context-width", "cli", "`generate --context` 4096-wide embeddings for a 24-wide model",
         lambda w: ["generate", str(w.student), "--context", str(w.ctx_wide)],
         ("--context: 'context' has shape [1, 5, 4096]", "[batch, tokens, 24]")),
    Case("gen-context-nan", "cli", "`generate --context` embeddings holding NaN",
         lambda w: ["generate", str(w.student), "--context", str(w.ctx_nan), "--latent-shape", "4,1,8,8", "--out",
                    str(w.root / "out" / "n.safetensors")],
         ("--context: 'context' holds 120 NaN/inf values",)),
    Case("gen-shape-f0", "cli", "`generate --latent-shape 4,0,8,8`", lambda w: _gen(w)[:4] + ["--latent-shape", "4,0,8,8"],
         ("--latent-shape must be 4 positive integers C,F,H,W, got '4,0,8,8'",)),
    Case("gen-shape-negative", "cli", "`generate --latent-shape 4,-3,8,8`",
         lambda w: _gen(w)[:4] + ["--latent-shape=4,-3,8,8"], ("--latent-shape must be 4 positive integers",)),
    Case("gen-shape-text", "cli", "`generate --latent-shape big`", lambda w: _gen(w)[:4] + ["--latent-shape", "big"],
         ("--latent-shape must be 4 positive integers",)),
    Case("gen-shape-983GB", "cli", "`generate --latent-shape 4,960,8000,8000` (a 983 GB latent)",
         lambda w: _gen(w)[:4] + ["--latent-shape", "4,960,8000,8000"], ("--latent-shape: a latent of 1x4x960x8000x8000",
                                                                           "GiB available: make it smaller")),
    Case("gen-shape-channels", "cli", "`generate --latent-shape 16,1,8,8` for a 4-channel model",
         lambda w: _gen(w)[:4] + ["--latent-shape", "16,1,8,8"], ("--latent-shape: the model has 4 latent channels",)),
    Case("gen-shape-patch", "cli", "`generate --latent-shape 4,1,7,8` (patch 2x2)",
         lambda w: _gen(w)[:4] + ["--latent-shape", "4,1,7,8"], ("--latent-shape: frames/height/width 1x7x8 must be "
                                                                 "multiples of the patch size 1x2x2",)),
    Case("gen-out-folder", "cli", "`generate --out` an existing folder",
         lambda w: _gen(w)[:6] + ["--out", str(w.folder)], ("--out:", "a_folder is a folder")),
    Case("gen-out-readonly", "cli", "`generate --out` in a read-only location",
         lambda w: _gen(w)[:6] + ["--out", f"{RO}/x.safetensors"], ("--out:", "is not writable")),
    Case("gen-out-exists", "cli", "`generate --out` an existing file, no --force",
         lambda w: _gen(w)[:6] + ["--out", str(w.existing)], ("--out:", "already exists: pass --force")),
    Case("gen-out-suffix", "cli", "`generate --out latents.pt`",
         lambda w: _gen(w)[:6] + ["--out", str(w.root / "l.pt")], ("--out: l.pt must end in .safetensors",)),
    Case("gen-vae-space-toy", "cli", "`generate --vae-space` with a model that is not Wan2.1",
         lambda w: _gen(w, "--vae-space"), ("--vae-space de-normalises Wan2.1 latents", "leave --vae-space out")),
    Case("gen-prompt-wan", "cli", "`generate --prompt` with a model that is not a toy model",
         lambda w: ["generate", str(w.student), "--prompt", "a red circle"], ("--prompt encodes toy-world prompts",)),
    Case("gen-prompt-unknown", "cli", "`generate TOY --prompt 'a purple circle'`",
         lambda w: _toygen(w, "--prompt", "a purple circle"), ("--prompt: the toy text encoder does not know 'purple'",)),
    Case("gen-prompt-100k", "cli", "`generate TOY --prompt` of 100,000 characters",
         lambda w: _toygen(w, "--prompt", LONG), ("--prompt: a prompt of 100000 characters",)),
    Case("gen-prompt-words", "cli", "`generate TOY --prompt` of 9 words",
         lambda w: _toygen(w, "--prompt", "a red circle moving left fast a red circle"),
         ("--prompt:", "has 9 words, the toy text encoder reads 8")),
    Case("gen-video-suffix", "cli", "`generate TOY --video clip.avi`",
         lambda w: _toygen(w, "--prompt", "a red circle", "--video", str(w.root / "clip.avi")),
         ("--video: clip.avi must end in .mp4 or .gif",)),
    Case("gen-vae-not-vae", "cli", "`generate TOY --vae` a file that is not a toy VAE",
         lambda w: ["generate", str(w.toy_student), "--prompt", "a red circle", "--vae", str(w.teacher), "--out",
                    str(w.root / "out" / "t.safetensors")], ("--vae: teacher.safetensors is not a toy VAE",)),
    # ---- tmd info
    Case("info-no-config", "cli", "`info` on a tmd/1 file without tmd_config", lambda w: ["info", str(w.no_cfg)],
         ("no_cfg.safetensors has no tmd_config metadata",)),
    Case("info-broken-config", "cli", "`info` on a tmd/1 file with broken tmd_config JSON",
         lambda w: ["info", str(w.broken_cfg)], ("broken_cfg.safetensors: its tmd_config metadata is not valid JSON",)),
    Case("info-head99", "cli", "`info` on a file whose metadata says head_blocks = 99", lambda w: ["info", str(w.head99)],
         ("head99.safetensors: its tmd_config metadata is impossible", "head_blocks must be between 1 and 3")),
    Case("info-layers", "cli", "`info` on a file whose metadata says 5 layers for 4 stored blocks",
         lambda w: ["info", str(w.layers5)], ("layers5.safetensors: its layer counts disagree", "stored blocks 4")),
    Case("info-missing", "cli", "`info` on a file that does not exist", lambda w: ["info", str(w.root / "nope.safetensors")],
         ("checkpoint not found", "nope.safetensors")),
    Case("info-pickle", "cli", "`info` on a pickle (.pt)", lambda w: ["info", str(w.pickle)],
         ("weights.pt is a .pt file", "never unpickled")),
    # ---- tmd make-data
    Case("data-batch-0", "cli", "`make-data --batch-size 0`", lambda w: _make_data(w, "--batch-size", "0"),
         ("--batch-size must be an integer from 1 to 4096, got 0",)),
    Case("data-shard-0", "cli", "`make-data --shard-size 0`", lambda w: _make_data(w, "--shard-size", "0"),
         ("--shard-size must be an integer from 1",)),
    Case("data-embeddings-pickle", "cli", "`make-data --embeddings` a pickle",
         lambda w: _make_data(w)[:3] + ["--embeddings", str(w.pickle)] + _make_data(w)[5:],
         ("--embeddings: weights.pt is a pickle",)),
    Case("data-embeddings-no-key", "cli", "`make-data --embeddings` without a 'context' tensor",
         lambda w: _make_data(w)[:3] + ["--embeddings", str(w.ctx_nokey)] + _make_data(w)[5:],
         ("--embeddings:", "has no 'context' tensor")),
    Case("data-teacher-student", "cli", "`make-data --teacher` a TMD student",
         lambda w: ["make-data", "--teacher", str(w.student), "--embeddings", str(w.ctx), "--out", str(w.root / "made")],
         ("--teacher:", "is a TMD student")),
    Case("data-out-exists", "cli", "`make-data --out` a folder holding a data set",
         lambda w: _make_data(w)[:-2] + ["--out", str(w.data)], ("--out:", "already holds a data set")),
    Case("data-seed-negative", "cli", "`make-data --seed -1`", lambda w: _make_data(w, "--seed", "-1"),
         ("--seed must be an integer from 0 to 4294967295",)),
    Case("data-steps-0", "cli", "`make-data --steps 0`", lambda w: _make_data(w, "--steps", "0"),
         ("--steps must be an integer from 1 to 1000",)),
    # ---- tmd eval (every check runs before a video is generated)
    Case("eval-dimension-unknown", "cli", "`eval --dimensions sharpness` (not a VBench dimension)",
         lambda w: _eval(w, "--dimensions", "temporal_flickering,sharpness"),
         ("--dimensions: unknown VBench dimension 'sharpness'", "temporal_flickering")),
    Case("eval-no-vbench", "cli", "`eval` of Wan models without --vbench-python",
         lambda w: _eval(w, "--dimensions", "temporal_flickering"), ("VBench is not set up", "setup_vbench.sh")),
    Case("eval-vbench-python-missing", "cli", "`eval --vbench-python` a path that does not exist",
         lambda w: _eval(w, "--vbench-python", str(w.root / "nowhere" / "python")),
         ("--vbench-python: no executable python",)),
    Case("eval-vbench-python-without-vbench", "cli", "`eval --vbench-python` an interpreter without vbench",
         lambda w: _eval(w, "--vbench-python", sys.executable), ("cannot import vbench", "setup_vbench.sh")),
    Case("eval-foreign-student", "cli", "`eval --student` a student distilled from another teacher",
         lambda w: _eval(w, student="foreign"), ("--student foreign.safetensors was distilled from the teacher "
                                                 "other.safetensors", "teacher.safetensors has sha256")),
    Case("eval-student-as-teacher", "cli", "`eval --teacher` a TMD student",
         lambda w: _eval(w)[:1] + ["--teacher", str(w.student), "--out", str(w.root / "eval")],
         ("--teacher student.safetensors is a TMD student",)),
    Case("eval-tmd-settings", "cli", "`eval --tmd-settings 2by2`", lambda w: _eval(w, "--tmd-settings", "2by2"),
         ("--tmd-settings: '2by2' is not OUTERxINNER",)),
    Case("eval-teacher-settings-cfg-0", "cli", "`eval --teacher-settings 50x0`",
         lambda w: _eval(w, "--teacher-settings", "50x0"), ("--teacher-settings: CFG 0 in '50x0' is outside (0, 100]",)),
    Case("eval-toy-wan-teacher", "cli", "`eval --toy` with a Wan teacher",
         lambda w: ["eval", "--toy", "--teacher", str(w.teacher), "--out", str(w.root / "eval")],
         ("--teacher teacher.safetensors is a Wan model", "leave --toy out")),
    # ---- tmd distill (--dry-run: exactly the checks the real run makes first)
    Case("cfg-lr-negative", "config", "`distill --set stage1.lr=-1`", lambda w: _distill(w, "stage1.lr=-1"),
         ("stage1.lr must be a finite number > 0, got -1.0",)),
    Case("cfg-lr-nan", "config", "`distill --set stage1.lr=.nan`", lambda w: _distill(w, "stage1.lr=.nan"),
         ("stage1.lr must be a finite number > 0, got nan",)),
    Case("cfg-lr-student-0", "config", "`distill --set stage2.lr_student=0`", lambda w: _distill(w, "stage2.lr_student=0"),
         ("stage2.lr_student must be a finite number > 0",)),
    Case("cfg-head-0", "config", "`distill --set model.head_blocks=0`", lambda w: _distill(w, "model.head_blocks=0"),
         ("model.head_blocks must be an integer >= 1, got 0",)),
    Case("cfg-head-99", "config", "`distill --set model.head_blocks=99` (a 4-block teacher)",
         lambda w: _distill(w, "model.head_blocks=99"), ("model.head_blocks must be an integer from 1 to 3, got 99",
                                                         "the teacher has 4 blocks")),
    Case("cfg-outer-0", "config", "`distill --set schedule.outer_steps=0`", lambda w: _distill(w, "schedule.outer_steps=0"),
         ("schedule: outer_steps must be an integer >= 1, got 0",)),
    Case("cfg-tmax-5", "config", "`distill --set schedule.t_max=5`", lambda w: _distill(w, "schedule.t_max=5"),
         ("schedule: t_max must be in (0, 1], got 5.0",)),
    Case("cfg-fusion", "config", "`distill --set model.fusion=banana`", lambda w: _distill(w, "model.fusion=banana"),
         ("model.fusion must be one of 'gated', 'concat', got 'banana'",)),
    Case("cfg-mode", "config", "`distill --set model.mode=qlora`", lambda w: _distill(w, "model.mode=qlora"),
         ("model.mode must be one of 'full', 'lora', got 'qlora'",)),
    Case("cfg-lora-rank-0", "config", "`distill --set model.mode=lora --set model.lora_rank=0`",
         lambda w: _distill(w, "model.mode=lora", "model.lora_rank=0"),
         ("model.lora_rank must be an integer of 1 or more",)),
    Case("cfg-lora-dmd", "config", "`distill --set model.mode=lora` for the DMD2-v baseline (student_kind dmd)",
         lambda w: _distill(w, "model.mode=lora", "stage2.student_kind=dmd", "stages=[stage2]"),
         ("model.mode lora trains TMD students", "trains in model.mode full")),
    Case("cfg-lora-alpha-0", "config", "`distill --set model.mode=lora --set model.lora_alpha=0`",
         lambda w: _distill(w, "model.mode=lora", "model.lora_alpha=0"),
         ("model.lora_alpha must be a positive number",)),
    Case("cfg-lora-targets", "config", "`distill --set model.mode=lora --set model.lora_targets=[mlp]`",
         lambda w: _distill(w, "model.mode=lora", "model.lora_targets=[mlp]"),
         ("model.lora_targets must be a non-empty list of ['cross_attn', 'ffn', 'self_attn'], got ['mlp']",)),
    Case("cfg-lora-init-full", "config", "`distill --set model.mode=lora --set model.student_init=` a full TMD student",
         lambda w: _distill(w, "model.mode=lora", f"model.student_init={w.student}"),
         ("model.student_init", "student.safetensors is a full TMD student, not a TMD patch",
          "a full student continues in model.mode full")),
    Case("cfg-lora-init-rank", "config", "`distill --set model.mode=lora --set model.student_init=` a rank-2 patch (lora_rank 64)",
         lambda w: _distill(w, "model.mode=lora", f"model.student_init={w.patch}"),
         ("model.student_init patch.safetensors has LoRA rank 2, model.lora_rank is 64",)),
    Case("cfg-xhat", "config", "`distill --set stage2.x_hat_mode=banana`", lambda w: _distill(w, "stage2.x_hat_mode=banana"),
         ("stage2.x_hat_mode must be one of 'x_t', 'x1', got 'banana'",)),
    Case("cfg-dmd-norm", "config", "`distill --set stage2.dmd_norm=l2`", lambda w: _distill(w, "stage2.dmd_norm=l2"),
         ("stage2.dmd_norm must be one of 'dmd2', 'l1diff'",)),
    Case("cfg-batch-0", "config", "`distill --set batch_size=0`", lambda w: _distill(w, "batch_size=0"),
         ("batch_size must be an integer >= 1, got 0",)),
    Case("cfg-ema", "config", "`distill --set ema_decay=1.5`", lambda w: _distill(w, "ema_decay=1.5"),
         ("ema_decay must be a finite number >= 0 and < 1, got 1.5",)),
    Case("cfg-betas", "config", "`distill --set stage2.betas=[0.0,1.5]`", lambda w: _distill(w, "stage2.betas=[0.0,1.5]"),
         ("stage2.betas[1] must be a finite number >= 0 and < 1, got 1.5",)),
    Case("cfg-iterations-0", "config", "`distill --set stage1.iterations=0`", lambda w: _distill(w, "stage1.iterations=0"),
         ("stage1.iterations must be an integer >= 1, got 0",)),
    Case("cfg-disc-layers", "config", "`distill --set stage2.disc_layers=[9]` (a 4-block teacher)",
         lambda w: _distill(w, "stage2.disc_layers=[9]", "stages=[stage1,stage2]"),
         ("discriminator layers must be block indices in 0..3",)),
    Case("cfg-set-yaml", "config", "`distill --set stage1.lr=[1e-5`", lambda w: _distill(w, "stage1.lr=[1e-5"),
         ("--set 'stage1.lr=[1e-5': the value is not valid YAML",)),
    Case("cfg-set-key", "config", "`distill --set stage1.lrr=1e-5`", lambda w: _distill(w, "stage1.lrr=1e-5"),
         ("unknown key --set.stage1.lrr",)),
    Case("cfg-teacher-pickle", "config", "`distill --teacher` a pickle (.pt)",
         lambda w: _distill(w)[:3] + ["--teacher", str(w.pickle)] + _distill(w)[5:],
         ("model.teacher: weights.pt is a .pt file", "never unpickled")),
    Case("cfg-teacher-student", "config", "`distill --teacher` a TMD student",
         lambda w: _distill(w)[:3] + ["--teacher", str(w.student)] + _distill(w)[5:], ("model.teacher", "is a TMD student")),
    Case("cfg-teacher-missing", "config", "`distill --teacher` a file that does not exist",
         lambda w: _distill(w)[:3] + ["--teacher", str(w.root / "nope.safetensors")] + _distill(w)[5:],
         ("teacher checkpoint", "nope.safetensors' does not exist")),
    Case("cfg-data-bad-index", "config", "`distill --data` a folder whose index.json is broken",
         lambda w: _distill(w)[:5] + ["--data", str(w.bad_index)] + _distill(w)[7:], ("index.json is not valid JSON",)),
    Case("cfg-yaml-broken", "config", "`distill --config` a broken YAML file",
         lambda w: _distill(w, extra=("--config", str(w.yaml_broken))), ("--config:", "broken.yaml is not valid YAML")),
    Case("cfg-yaml-python", "config", "`distill --config` a YAML file with a !!python tag",
         lambda w: _distill(w, extra=("--config", str(w.yaml_python))), ("--config:", "python.yaml is not valid YAML",
                                                                         "no !!python tags")),
    Case("cfg-yaml-folder", "config", "`distill --config` a folder",
         lambda w: _distill(w, extra=("--config", str(w.folder))), ("--config:", "a_folder is a folder")),
    Case("cfg-resume-missing", "config", "`distill --resume` with an output folder that does not exist",
         lambda w: _distill(w, extra=("--resume",)), ("--resume: there is no run to resume", "without --resume")),
    Case("cfg-run-exists", "config", "`distill` into an output folder that holds a run, no --resume",
         lambda w: _distill(w)[:7] + ["--output-dir", str(w.run_done)] + _distill(w)[9:],
         ("output_dir", "already holds a run (state-stage1.safetensors): pass --resume")),
    Case("cfg-out-file", "config", "`distill --output-dir` a file",
         lambda w: _distill(w)[:7] + ["--output-dir", str(w.run_file)] + _distill(w)[9:],
         ("output_dir:", "run_is_a_file is a file, expected a folder")),
    Case("cfg-out-readonly", "config", "`distill --output-dir` on a read-only file system",
         lambda w: _distill(w)[:7] + ["--output-dir", f"{RO}/run"] + _distill(w)[9:], ("output_dir:", "is not writable")),
    Case("cfg-name", "config", "`distill --set name=../x`", lambda w: _distill(w, "name=../x"),
         ("name '../x' must be a plain file name",)),
    # ---- comfy-run, demo, toy
    Case("comfy-server", "cli", "`comfy-run --server notaurl`",
         lambda w: ["comfy-run", str(w.workflow), "--server", "notaurl"], ("--server 'notaurl' is not a URL",)),
    Case("comfy-port", "cli", "`comfy-run --server http://host:port`",
         lambda w: ["comfy-run", str(w.workflow), "--server", "http://host:port"], ("--server", "has an invalid port")),
    Case("comfy-timeout", "cli", "`comfy-run --timeout 0`", lambda w: ["comfy-run", str(w.workflow), "--timeout", "0"],
         ("--timeout must be a number of seconds > 0",)),
    Case("comfy-workflow-folder", "cli", "`comfy-run` with a folder as workflow",
         lambda w: ["comfy-run", str(w.folder)], ("workflow", "a_folder is a folder")),
    Case("comfy-out-readonly", "cli", "`comfy-run --out` a read-only folder",
         lambda w: ["comfy-run", str(w.workflow), "--out", f"{RO}/out"], ("--out:", "is not writable")),
    Case("demo-random-head", "cli", "`demo --random --head-blocks 0`", lambda w: ["demo", "--random", "--head-blocks", "0"],
         ("--head-blocks must be an integer from 1 to 11, got 0",)),
    Case("demo-random-layers", "cli", "`demo --random --layers 1`", lambda w: ["demo", "--random", "--layers", "1"],
         ("--layers must be an integer from 2 to 64, got 1",)),
    Case("toy-demo-prompt-100k", "cli", "`toy demo --prompt` of 100,000 characters",
         lambda w: ["toy", "demo", "--prompt", LONG, "--out", str(w.root / "demo")], ("--prompt: a prompt of 100000",)),
    Case("toy-demo-outer-0", "cli", "`toy demo --outer-steps 0`",
         lambda w: ["toy", "demo", "--outer-steps", "0", "--out", str(w.root / "demo")],
         ("--outer-steps must be an integer from 1 to 1000, got 0",)),
    Case("toy-demo-readonly", "cli", "`toy demo --out` on a read-only file system",
         lambda w: ["toy", "demo", "--out", f"{RO}/demo"], ("--out:", "is not writable")),
    Case("toy-distill-prompts-0", "cli", "`toy distill --prompts 0`",
         lambda w: ["toy", "distill", "--prompts", "0", "--run-dir", str(w.root / "quick")],
         ("--prompts must be an integer from 1 to 192, got 0",)),
    Case("toy-distill-wan-teacher", "cli", "`toy distill --teacher` a teacher that is not of the toy world",
         lambda w: ["toy", "distill", "--teacher", str(w.teacher), "--run-dir", str(w.root / "quick")],
         ("--teacher: teacher.safetensors is not a teacher of this toy world",)),
    Case("toy-distill-exists", "cli", "`toy distill --run-dir` a folder holding a run, no --resume",
         lambda w: ["toy", "distill", "--teacher", str(w.toy_teacher), "--run-dir", str(w.run_done)],
         ("--run-dir:", "already holds a run: pass --resume")),
    Case("toy-distill-resume", "cli", "`toy distill --resume` with nothing to resume",
         lambda w: ["toy", "distill", "--teacher", str(w.toy_teacher), "--run-dir", str(w.root / "nothing"), "--resume"],
         ("--resume: there is no run to resume",)),
]


# ---- the library (public API): each must raise a TMDError whose message names the argument
def _load_tmd_dtype(w):
    import tmd_core

    tmd_core.load_tmd(w.student, dtype="banana")


def _noise_seed(seed):
    def run(w):
        import tmd_core

        tmd_core.make_noise((1, 4, 1, 8, 8), seed=seed)

    return run


def _teacher_sample(**kw):
    def run(w):
        import tmd_core

        teacher = tmd_core.load_teacher(w.teacher)
        noise = tmd_core.make_noise((1, 4, 1, 8, 8), seed=0)
        ctx = load_file(str(w.ctx))["context"]
        tmd_core.sample_teacher(teacher, noise, ctx, **{"steps": 2, "guidance_scale": 1.0, **kw})

    return run


def _tmd_sample_nan_context(w):
    import tmd_core

    student = tmd_core.load_tmd(w.student)
    tmd_core.sample_tmd(student, tmd_core.make_noise((1, 4, 1, 8, 8), seed=0), load_file(str(w.ctx_nan))["context"],
                        tmd_core.TMDSchedule(1, 1))


def _schedule(**kw):
    def run(w):
        import tmd_core

        tmd_core.TMDSchedule(**kw)

    return run


def _split(h):
    def run(w):
        import tmd_core

        tmd_core.TMDModel.from_teacher(tmd_core.load_teacher(w.teacher), head_blocks=h)

    return run


def _lora(w, *extra, student="student", teacher="teacher"):
    return ["extract-lora", str(getattr(w, student)), "--teacher", str(getattr(w, teacher)), "--rank", "2",
            "--out", str(w.root / "out" / "p.safetensors"), *extra]


def _apply_patch_other(w):
    from tmd_core.patch import apply_patch
    from tmd_core.patch_file import load_patch

    apply_patch(__import__("tmd_core").load_teacher(w.toy_teacher), load_patch(w.patch), source="patch.safetensors",
                teacher_name="toy_teacher.safetensors")


def _load_config_python(w):
    from tmd_core.training.config import load_config

    load_config("tiny", w.yaml_python)


CASES += [  # ---- TMD patches (docs/patches.md)
    Case("lora-rank-0", "cli", "`extract-lora --rank 0`", lambda w: _lora(w)[:5] + ["0"] + _lora(w)[6:],
         ("--rank must be an integer from 1 to 65536, got 0",)),
    Case("lora-student-is-teacher", "cli", "`extract-lora TEACHER --teacher TEACHER`",
         lambda w: _lora(w, student="teacher"), ("STUDENT: teacher.safetensors is a plain Wan model",
                                                 "needs a full TMD student")),
    Case("lora-student-is-patch", "cli", "`extract-lora PATCH --teacher T`", lambda w: _lora(w, student="patch"),
         ("STUDENT: patch.safetensors is a TMD patch already",)),
    Case("lora-teacher-is-student", "cli", "`extract-lora STUDENT --teacher STUDENT`",
         lambda w: _lora(w, teacher="student"), ("--teacher: student.safetensors is a TMD student, not a Wan teacher",
                                                 "give the teacher the TMD student was distilled from")),
    Case("lora-teacher-other-arch", "cli", "`extract-lora STUDENT --teacher` a teacher of another architecture",
         lambda w: _lora(w, teacher="toy_teacher"),
         ("the student student.safetensors was made for a Wan model (4 layers, width 32",
          "the teacher toy_teacher.safetensors is a Wan model (2 layers", "num_layers 4 vs 2",
          "pass the teacher the student was distilled from")),
    Case("lora-out-exists", "cli", "`extract-lora --out` an existing file",
         lambda w: _lora(w)[:-1] + [str(w.existing)], ("--out:", "already exists")),
    Case("gen-patch-no-teacher", "cli", "`generate PATCH` without --teacher", lambda w: _gen(w, ckpt="patch"),
         ("patch.safetensors is a TMD patch: give the teacher it applies to with --teacher",)),
    Case("gen-patch-other-arch", "cli", "`generate PATCH --teacher` a teacher of another architecture",
         lambda w: _gen(w, "--teacher", str(w.toy_teacher), ckpt="patch"),
         ("patch.safetensors was made for a Wan model (4 layers", "toy_teacher.safetensors is a Wan model (2 layers",
          "a patch only fits the architecture of the teacher it was extracted from")),
    Case("gen-teacher-on-student", "cli", "`generate STUDENT --teacher T`", lambda w: _gen(w, "--teacher", str(w.teacher)),
         ("--teacher is the teacher of a TMD patch; student.safetensors is not a patch",)),
    Case("api-apply-patch-other-arch", "api", "`apply_patch(teacher of another architecture, patch)`",
         _apply_patch_other, ("patch.safetensors was made for a Wan model (4 layers",
                              "toy_teacher.safetensors is a Wan model (2 layers")),
    Case("api-load-patch-garbage", "api", "`load_patch` of random bytes",
         lambda w: __import__("tmd_core.patch_file", fromlist=["x"]).load_patch(w.garbage),
         ("garbage.safetensors is not a readable safetensors file",)),
    Case("api-load-patch-student", "api", "`load_patch` of a full TMD student",
         lambda w: __import__("tmd_core.patch_file", fromlist=["x"]).load_patch(w.student),
         ("student.safetensors is a full TMD student, not a TMD patch",)),
    Case("api-load-tmd-patch", "api", "`load_tmd` of a TMD patch", lambda w: __import__("tmd_core").load_tmd(w.patch),
         ("patch.safetensors is a TMD patch", "load it together with its teacher")),
]

CASES += [
    Case("api-load-tmd-dtype", "api", "`load_tmd(path, dtype='banana')`", _load_tmd_dtype,
         ("dtype must be None (keep the stored dtype), a floating torch.dtype or one of fp32", "got 'banana'")),
    Case("api-noise-seed-negative", "api", "`make_noise(shape, seed=-1)`", _noise_seed(-1),
         ("seed must be an integer from 0 to 2**64-1, got -1",)),
    Case("api-noise-seed-2^64", "api", "`make_noise(shape, seed=2**64)`", _noise_seed(2**64),
         ("seed must be an integer from 0 to 2**64-1, got 18446744073709551616",)),
    Case("api-noise-seed-float", "api", "`make_noise(shape, seed=1.5)`", _noise_seed(1.5),
         ("seed must be an integer from 0 to 2**64-1, got 1.5",)),
    Case("api-teacher-guidance-nan", "api", "`sample_teacher(..., guidance_scale=nan)`",
         _teacher_sample(guidance_scale=float("nan")), ("guidance_scale must be a finite number, got nan",)),
    Case("api-teacher-steps-0", "api", "`sample_teacher(..., steps=0)`", _teacher_sample(steps=0),
         ("steps must be an integer >= 1, got 0",)),
    Case("api-teacher-shift-0", "api", "`sample_teacher(..., shift=0)`", _teacher_sample(shift=0.0),
         ("shift must be a finite number > 0, got 0.0",)),
    Case("api-tmd-nan-context", "api", "`sample_tmd` with a context holding NaN", _tmd_sample_nan_context,
         ("the text context holds 120 NaN/inf values",)),
    Case("api-schedule-0", "api", "`TMDSchedule(outer_steps=0)`", _schedule(outer_steps=0),
         ("outer_steps must be an integer >= 1, got 0",)),
    Case("api-schedule-tmax", "api", "`TMDSchedule(t_max=5)`", _schedule(t_max=5), ("t_max must be in (0, 1], got 5",)),
    Case("api-split-0", "api", "`TMDModel.from_teacher(teacher, head_blocks=0)`", _split(0),
         ("head_blocks must be between 1 and 3 for a 4-block teacher",)),
    Case("api-load-teacher-missing", "api", "`load_teacher('nope.safetensors')`",
         lambda w: __import__("tmd_core").load_teacher(w.root / "nope.safetensors"), ("checkpoint not found",)),
    Case("api-load-config-python", "api", "`load_config('tiny', 'python.yaml')` with a !!python tag", _load_config_python,
         ("python.yaml is not valid YAML",)),
    Case("api-describe-pickle", "api", "`describe_checkpoint('weights.pt')`",
         lambda w: __import__("tmd_core").describe_checkpoint(w.pickle), ("weights.pt is a .pt file",)),
    Case("api-preview-prompts-count", "api", "`PreviewPrompts(['a fox', 'a cat'], [one embedding])`",
         lambda w: _preview_prompts(2, 1), ("preview prompts: 2 prompts and 1 embeddings",)),
    Case("api-preview-prompts-width", "api",
         "`PreviewPrompts` of 8-wide embeddings for a 24-wide teacher (`distill_in_process(..., previews=...)` checks them)",
         lambda w: _preview_prompts(1, 1, width=8).check_width(24),
         ("the preview prompts were encoded [8] wide, the teacher reads 24-wide text",)),
]


def _preview_prompts(prompts: int, embeddings: int, width: int = 24):
    from tmd_core.training import PreviewPrompts

    return PreviewPrompts(["a fox", "a cat"][:prompts], [torch.zeros(3, width)] * embeddings)


# ---- ComfyUI nodes (tests/nodes/test_bad_inputs_nodes.py runs these with the host stand-ins)
def run_node(node_cls, *args, **inputs):
    from comfy_fakes import run_node  # the host stand-ins: imported only where node cases run

    return run_node(node_cls, *args, **inputs)


def _node_sampler(seed=0, schedule="ok"):
    def run(w, nodes):
        import tmd_core

        (model,) = run_node(nodes.TMDModelLoader, "student.safetensors", 5, "default").result
        ctx = load_file(str(w.ctx))["context"]
        sched = tmd_core.TMDSchedule(1, 1) if schedule == "ok" else schedule
        run_node(nodes.TMDSampler, model, [[ctx, {}]], {"samples": torch.zeros(1, 16, 1, 8, 8)}, sched, seed)

    return run


def _node_loader(name="teacher", head_blocks=2, dtype="default"):
    def run(w, nodes):
        run_node(nodes.TMDModelLoader, name, head_blocks, dtype)

    return run


def _node_distill(**kw):
    def run(w, nodes):
        args = dict(prompts="a red circle", stages="stage1", outer_steps=1, inner_steps=1, head_blocks=1,
                    stage1_iterations=1, stage2_iterations=1, lr_stage1=1e-3, lr_student=1e-3, batch_size=1, frames=8,
                    width=32, height=32, samples_per_prompt=1, teacher_steps=1, guidance_scale=1.0, teacher_shift=3.0,
                    output_name="run", resume=False, seed=0, teacher_name="wan/teacher.safetensors")
        args.update(kw)
        run_node(nodes.TMDDistill, **args)

    return run


def _node_toy_text(text):
    def run(w, nodes):
        run_node(nodes.TMDToyTextEncode, text)

    return run


def _node_schedule(**kw):
    def run(w, nodes):
        args = dict(outer_steps=2, inner_steps=2, outer_shift=10.0, inner_shift=10.0)
        args.update(kw)
        run_node(nodes.TMDSchedule, **args)

    return run


def _node_info(name):
    def run(w, nodes):
        run_node(nodes.TMDCheckpointInfo, name)

    return run


CASES += [
    Case("node-sampler-seed-2^63", "node", "TMDSampler `seed` = 2**63", _node_sampler(seed=2**63),
         ("seed must be an integer from 0 to 4294967295",)),
    Case("node-sampler-seed-negative", "node", "TMDSampler `seed` = -1", _node_sampler(seed=-1),
         ("seed must be an integer from 0 to 4294967295, got -1",)),
    Case("node-sampler-schedule", "node", "TMDSampler `schedule` that is not a TMD_SCHEDULE",
         _node_sampler(schedule={"steps": 2}), ("schedule must come from a TMDSchedule node",)),
    Case("node-loader-head-0", "node", "TMDModelLoader `head_blocks` = 0 on a teacher",
         _node_loader("diffusion_models/wan/teacher.safetensors", 0), ("head_blocks must be an integer from 1 to 3, got 0",)),
    Case("node-loader-head-99", "node", "TMDModelLoader `head_blocks` = 99 on a teacher",
         _node_loader("diffusion_models/wan/teacher.safetensors", 99), ("head_blocks must be an integer from 1 to 3",)),
    Case("node-loader-dtype", "node", "TMDModelLoader `dtype` = 'banana'", _node_loader("student.safetensors", 2, "banana"),
         ("dtype must be one of 'default', 'fp32', 'bf16', 'fp16', got 'banana'",)),
    Case("node-loader-escape", "node", "TMDModelLoader `ckpt_name` = '../../etc/passwd'",
         _node_loader("../../etc/passwd"), ("'../../etc/passwd' points outside the tmd model folder",)),
    Case("node-loader-head99-file", "node", "TMDModelLoader on a student whose metadata says head_blocks = 99",
         _node_loader("head99.safetensors"), ("head99.safetensors: its tmd_config metadata is impossible",)),
    Case("node-info-broken", "node", "TMDCheckpointInfo on a file with broken tmd_config", _node_info("broken_cfg.safetensors"),
         ("broken_cfg.safetensors: its tmd_config metadata is not valid JSON",)),
    Case("node-toy-text-unknown", "node", "TMDToyTextEncode `text` = 'a purple circle'", _node_toy_text("a purple circle"),
         ("text: the toy text encoder does not know 'purple'",)),
    Case("node-toy-text-100k", "node", "TMDToyTextEncode `text` of 100,000 characters", _node_toy_text(LONG),
         ("text: a prompt of 100000 characters",)),
    Case("node-schedule-0", "node", "TMDSchedule `outer_steps` = 0", _node_schedule(outer_steps=0),
         ("outer_steps must be an integer >= 1, got 0",)),
    Case("node-schedule-shift", "node", "TMDSchedule `outer_shift` = nan", _node_schedule(outer_shift=float("nan")),
         ("outer_shift must be a number > 0, got nan",)),
    Case("node-distill-name", "node", "TMDDistill `output_name` = '../x'", _node_distill(output_name="../x"),
         ("output name '../x' must be a plain file name",)),
    Case("node-distill-head-99", "node", "TMDDistill `head_blocks` = 99 with a teacher file",
         _node_distill(head_blocks=99), ("head_blocks must be an integer from 1 to 3, got 99",)),
    Case("node-distill-seed", "node", "TMDDistill `seed` = 2**63", _node_distill(seed=2**63),
         ("seed must be an integer from 0 to",)),
    Case("node-distill-no-teacher", "node", "TMDDistill with no teacher", _node_distill(teacher_name="none"),
         ("no teacher: connect a Wan2.1 MODEL",)),
    Case("node-distill-size", "node", "TMDDistill `width` = 30 (not a multiple of 16)", _node_distill(width=30),
         ("width and height must be positive multiples of 16",)),
    Case("node-distill-mode", "node", "TMDDistill `mode` = 'qlora'", _node_distill(mode="qlora"),
         ("mode must be one of 'full', 'lora', got 'qlora'",)),
    Case("node-distill-validation-every", "node", "TMDDistill `validation_every` = -1", _node_distill(validation_every=-1),
         ("validation_every must be an integer >= 0, got -1",)),
    Case("node-distill-preview-no-clip", "node", "TMDDistill `validation_prompts` with a Wan teacher, a `data_folder` "
         "and no `clip`", lambda w, nodes: _node_distill(data_folder=str(w.shards16), prompts="",
                                                           validation_prompts="a fox")(w, nodes),
         ("validation_prompts need the teacher's text encoder: connect a CLIP",)),
    Case("node-distill-preview-toy-word", "node", "TMDDistill `validation_prompts` = 'a purple circle moving left fast' "
         "with a toy teacher", _node_distill(teacher_name="toy/toy_teacher.safetensors", prompts="a red circle moving left fast",
                                             validation_prompts="a purple circle moving left fast"),
         ("validation_prompts: the toy text encoder does not know 'purple'",)),
    Case("node-distill-vae-family", "node", "TMDDistill `vae` of another latent width (an SD1.5 VAE: 4 channels)",
         lambda w, nodes: _node_distill(data_folder=str(w.shards16), prompts="",
                                        vae=SimpleNamespace(latent_channels=4))(w, nodes),
         ("vae decodes 4-channel latents, the teacher makes 16: connect the Wan2.1 VAE",)),
    Case("node-distill-quantised-model", "node", "TMDDistill `teacher` a MODEL of quantised (GGUF) weights",
         lambda w, nodes: _node_distill(teacher=_quantised_model(), teacher_name="none")(w, nodes),
         ("the teacher MODEL stores weight as torch.uint8: a quantised model (GGUF?) cannot be distilled from",)),
    Case("node-distill-gguf-model", "node", "TMDDistill `teacher` a MODEL from ComfyUI-GGUF's UnetLoaderGGUF",
         lambda w, nodes: _node_distill(teacher=_gguf_model(), teacher_name="none")(w, nodes),
         ("the teacher MODEL was loaded by a GGUF loader (UnetLoaderGGUF)", "load the fp16/bf16 (or fp8) Wan2.1 file "
          "with UNETLoader")),
]


def _node_apply(tmd_name, **arch):
    """TMDApplyToModel on a MODEL of the world's teacher (the host's Wan classes stood in), WanModel sizes `arch`."""
    def run(w, nodes):
        from native_stand_ins import fake_model, wan_host

        with wan_host():
            run_node(nodes.TMDApplyToModel, model=fake_model(make_tiny_teacher(0), **arch), tmd_name=tmd_name)

    return run


CASES += [  # ---- TMD patches on the node path (docs/patches.md §6, docs/host.md §12)
    Case("node-loader-patch", "node", "TMDModelLoader `ckpt_name` = a TMD patch", _node_loader("patch.safetensors"),
         ("patch.safetensors is a TMD patch, which needs the teacher MODEL it was made for", "TMDApplyToModel")),
    Case("node-apply-patch-other-arch", "node", "TMDApplyToModel `tmd_name` = a patch for a 4-block Wan, `model` a "
         "6-block Wan MODEL", _node_apply("patch.safetensors", num_layers=6),
         ("patch.safetensors was made for a Wan2.1 of width 32 x 4 blocks", "the MODEL is width 32 x 6 blocks")),
    Case("node-apply-patch-corrupt", "node", "TMDApplyToModel `tmd_name` = a patch without its tmd_config metadata",
         _node_apply("patch_nocfg.safetensors"), ("patch_nocfg.safetensors has no tmd_config metadata",)),
]


def _quantised_model():
    """A MODEL (the host stand-in's ModelPatcher) whose Wan weight is stored as uint8, as GGUF loaders keep them."""
    from comfy.model_patcher import ModelPatcher

    base = torch.nn.Module()
    base.diffusion_model = torch.nn.Linear(2, 2)
    base.diffusion_model.weight = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.uint8), requires_grad=False)
    return ModelPatcher(base, torch.device("cpu"), torch.device("cpu"))


def _gguf_model():
    """A MODEL (the host stand-in's ModelPatcher) whose Wan weight is a GGMLTensor, as ComfyUI-GGUF loads it
    (tests/nodes/gguf_fakes.py)."""
    import gguf_fakes
    from comfy.model_patcher import ModelPatcher

    base = torch.nn.Module()
    base.diffusion_model = torch.nn.Linear(32, 2)
    base.diffusion_model.weight = torch.nn.Parameter(gguf_fakes.packed(torch.zeros(2, 32)), requires_grad=False)
    return ModelPatcher(base, torch.device("cpu"), torch.device("cpu"))
