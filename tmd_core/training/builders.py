"""The networks of a distillation run: frozen teacher, students of both stages, fake score (docs/method.md §4–5)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch

from ..errors import ConfigError
from ..wan_build import transformer_config_dict

# Fields that decide whether two Wan transformers have the same architecture (weights interchangeable).
ARCH_FIELDS = ("patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
               "text_dim", "freq_dim", "ffn_dim", "num_layers", "cross_attn_norm", "qk_norm",
               "image_dim", "added_kv_proj_dim")


def check_same_architecture(teacher_cfg: dict, student_cfg: dict, student_name: str) -> None:
    """ConfigError listing the differing fields when a student was not made from this teacher's architecture."""
    diff = [f"{k}: teacher {teacher_cfg.get(k)!r}, student {student_cfg.get(k)!r}"
            for k in ARCH_FIELDS if teacher_cfg.get(k) != student_cfg.get(k)]
    if diff:
        raise ConfigError(
            f"the teacher and the student {student_name} have different architectures ({'; '.join(diff)}): "
            "distill with the teacher the student was made from, or start a new student from this teacher"
        )


def check_data_fits(teacher, latent_shape, text_dim: int, data_name: str) -> None:
    cfg = teacher.config
    if latent_shape[0] != cfg.in_channels or text_dim != cfg.text_dim:
        raise ConfigError(
            f"data {data_name} has {latent_shape[0]}-channel latents and {text_dim}-wide text embeddings, "
            f"the teacher expects {cfg.in_channels} and {cfg.text_dim}: make the data with this teacher "
            "(tmd make-data) and its text encoder"
        )
    p = cfg.patch_size
    if any(s % q for s, q in zip(latent_shape[1:], p)):
        raise ConfigError(f"data latents {tuple(latent_shape)} are not divisible by the patch size {tuple(p)}")


def state_dict_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor: the hash of an in-memory teacher."""
    digest = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        digest.update(f"{k}|{v.dtype}|{tuple(v.shape)}\0".encode())
        digest.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def teacher_identity(cfg, teacher, cache_dir: Path) -> dict:
    """{"teacher": name, "teacher_sha256": hex}; a file's digest is cached by (path, size, mtime)."""
    path = cfg.model.teacher
    if not path:
        return {"teacher": "(in-process)", "teacher_sha256": state_dict_sha256(teacher)}
    from ..loading import teacher_sha256

    p = Path(path)
    st = p.stat()
    key = {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cache = cache_dir / "teacher.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved["identity"]
    identity = {"teacher": p.name, "teacher_sha256": teacher_sha256(p)}
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "identity": identity}))
    return identity


def teacher_dtype(cfg, device) -> torch.dtype:
    """The frozen teacher's dtype: `teacher_dtype` bf16 or fp32, or "auto": bf16 on a GPU, fp32 on the CPU.

    On the CPU a bf16 teacher is slow where the processor has no bf16 matrix units: a DMD2-v toy run with the
    shipped bf16 toy teacher took 3.5 s per stage-2 iteration against 1.5 s with the same weights in fp32,
    under the same load (2-core AMD EPYC, one thread per run, two runs side by side)."""
    if cfg.teacher_dtype == "auto":
        return torch.bfloat16 if torch.device(device).type != "cpu" else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[cfg.teacher_dtype]


def load_frozen_teacher(cfg, teacher, device) -> torch.nn.Module:
    """The teacher in eval mode with gradients off (loaded from `model.teacher` unless given), in its run dtype
    (`teacher_dtype`). Sharding it (`teacher_placement: shard`) is the loop's (sharding.shard_frozen)."""
    if teacher is None:
        from ..loading import load_teacher

        teacher = load_teacher(cfg.model.teacher, device=device)
    teacher = cast_parameters(teacher.to(device), teacher_dtype(cfg, device)).eval()
    teacher.requires_grad_(False)
    if cfg.gradient_checkpointing and "stage2" in cfg.stages:
        teacher.enable_gradient_checkpointing()  # the GAN term backpropagates through its blocks
    return teacher


MASTER_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cast_parameters(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The module's floating parameters in `dtype`, in place; buffers (Wan's fp32 rotary tables) as they are."""
    for p in module.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
    return module


def _trainable(module: torch.nn.Module, cfg) -> torch.nn.Module:
    """A network to train, in the run's master dtype (`master_dtype`: its weights and gradients)."""
    module = (module.float() if cfg.master_dtype == "fp32" else cast_parameters(module, torch.bfloat16)).train()
    module.requires_grad_(True)
    if cfg.gradient_checkpointing:
        tr = getattr(module, "transformer", module)
        tr.enable_gradient_checkpointing()
    return module


def _trainable_lora(module: torch.nn.Module, cfg) -> torch.nn.Module:
    """A LoRA-mode network to train: only its own parameters (LoRA factors; the student's fusion layer and gap
    embedding) in the master dtype and trained; the shared base weights stay the frozen teacher's, in its dtype."""
    module.train()
    tr = getattr(module, "transformer", module)
    for name, p in module.named_parameters():
        own = ".lora_" in name or (module is not tr and not name.startswith("transformer."))  # LoRA, fusion, emb_gap
        if own:
            if p.is_floating_point() and p.dtype != MASTER_DTYPE[cfg.master_dtype]:
                p.data = p.data.to(MASTER_DTYPE[cfg.master_dtype])
            p.requires_grad_(True)
        elif p.requires_grad:
            raise RuntimeError(f"LoRA mode: the base weight {name} would train; please report this")
    if cfg.gradient_checkpointing:
        tr.enable_gradient_checkpointing()  # on this view only: the teacher's flag is its own
    return module


def _lora_student(cfg, teacher, device, init: Path | None = None):
    """LoRA mode (docs/design.md §7): the student = the teacher's shared weights + the "student" LoRA + its own
    fusion layer and gap embedding; from the LoRA-mode patch `init` when given (B = 0 otherwise: equal to the
    teacher, the decoupling invariant of docs/method.md §2.3)."""
    from ..lora import STUDENT_ADAPTER, add_lora, load_lora_patch
    from ..model import TMDModel
    from ..patch_file import load_patch

    m = cfg.model
    view = add_lora(teacher, STUDENT_ADAPTER, m.lora_rank, m.lora_alpha, m.lora_targets)
    student = TMDModel.from_teacher(view, head_blocks=m.head_blocks, fusion=m.fusion, schedule=copy.deepcopy(cfg.schedule))
    if init is not None:
        load_lora_patch(student, load_patch(init), source=Path(init).name)
    return _trainable_lora(student.to(device), cfg)


def _fresh_student(cfg, teacher):
    """An untrained TMD student on a copy of the teacher, carrying the run's schedule in its tmd_config."""
    from ..model import TMDModel

    return TMDModel.from_teacher(copy.deepcopy(teacher), head_blocks=cfg.model.head_blocks, fusion=cfg.model.fusion,
                                 schedule=copy.deepcopy(cfg.schedule))


def build_stage1_student(cfg, teacher, device):
    """Stage 1 starts from `model.student_init` (a tmd/1 file) or splits a copy of the teacher."""
    from ..checkpoint import load_tmd, read_tmd_info

    if cfg.model.mode == "lora":
        return _lora_student(cfg, teacher, device, Path(cfg.model.student_init) if cfg.model.student_init else None)
    if cfg.model.student_init:
        info = read_tmd_info(cfg.model.student_init)
        check_same_architecture(transformer_config_dict(teacher), info["transformer_config"], cfg.model.student_init)
        student = load_tmd(cfg.model.student_init, device=device)
    else:
        student = _fresh_student(cfg, teacher)
    return _trainable(student.to(device), cfg)


def build_stage2_student(cfg, teacher, device, stage1_result: Path | None):
    """Stage 2's student: the stage-1 result, `model.student_init`, or (when allowed) the teacher.

    A DMD2-v baseline student (`stage2.student_kind: dmd`) is a plain copy of the teacher.
    """
    from ..checkpoint import load_tmd, read_tmd_info

    if cfg.stage2.student_kind == "dmd":
        return _trainable(copy.deepcopy(teacher).to(device), cfg)
    init = stage1_result or (Path(cfg.model.student_init) if cfg.model.student_init else None)
    if cfg.model.mode == "lora":
        if init is None and not cfg.stage2.init_from_teacher:
            raise ConfigError("stage 2 needs a student: run stage 1 first, set model.student_init, or set "
                              "stage2.init_from_teacher")
        return _lora_student(cfg, teacher, device, init)
    if init is not None:
        info = read_tmd_info(init)
        check_same_architecture(transformer_config_dict(teacher), info["transformer_config"], str(init))
        return _trainable(load_tmd(init, device=device), cfg)
    if not cfg.stage2.init_from_teacher:
        raise ConfigError(
            "stage 2 needs a student: run stage 1 first, set model.student_init, or set stage2.init_from_teacher"
        )
    return _trainable(_fresh_student(cfg, teacher).to(device), cfg)


def build_fake_score(cfg, teacher, device) -> torch.nn.Module:
    """The fake score: the teacher's architecture and weights (docs/method.md §5), trained; in LoRA mode the
    teacher's shared weights + the "fake" LoRA (B = 0: equal to the teacher at the start)."""
    if cfg.model.mode == "lora":
        from ..lora import FAKE_ADAPTER, add_lora

        m = cfg.model
        return _trainable_lora(add_lora(teacher, FAKE_ADAPTER, m.lora_rank, m.lora_alpha, m.lora_targets).to(device),
                               cfg)
    return _trainable(copy.deepcopy(teacher).to(device), cfg)
