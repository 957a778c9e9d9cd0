"""Typed training configuration with named presets and strict YAML overrides (METHOD.md §4–5)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError


@dataclass
class ModelConfig:
    teacher: str = ""  # teacher checkpoint (any layout load_teacher reads) or toy:teacher
    head_blocks: int = 5  # H: blocks in the flow head
    fusion: str = "gated"  # "gated" | "concat"
    student_init: str = ""  # optional tmd/1 checkpoint to start from (e.g. the stage-1 result)


@dataclass
class ScheduleConfig:
    outer_steps: int = 2  # M: student transitions
    inner_steps: int = 2  # N: flow-head steps
    outer_shift: float = 10.0  # γ of t_student (METHOD.md §1)
    inner_shift: float = 10.0  # γ of the inner grid
    t_max: float = 0.999


@dataclass
class Stage1Config:
    """TM-MF pretraining (METHOD.md §4, Alg. 2)."""

    iterations: int = 3000
    lr: float = 3e-5  # AdamW (1e-5 for 14B)
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    cfg_scale: float = 3.0  # ω of the CFG target
    cond_dropout: float = 0.1  # share of samples trained on the negative prompt with plain v
    r_equals_s_share: float = 0.75  # share of each batch with r = s
    s_shift: float = 3.0  # s = clip(shift_3(U), 0.001, 0.999)
    fd_delta: float = 5e-3  # δ of the central finite difference du/ds
    norm_c: float | None = None  # c of the adaptive loss normaliser; None = d (dims of y); 14B: 1e-5·d
    plain_tm: bool = False  # ablation: r = s everywhere (plain transition matching)


@dataclass
class Stage2Config:
    """DMD2-v with flow-head rollout (METHOD.md §5)."""

    iterations: int = 4000  # 4k for M >= 2, 12k for M = 1
    lr_student: float = 1e-5
    lr_fake: float = 1e-5
    lr_disc: float = 1e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.0, 0.999)
    student_every: int = 5  # fake score + discriminator every iteration, student every 5th
    real_cfg: float = 5.0  # teacher guidance in the DMD loss
    dmd_shift: float = 5.0  # γ of t_dmd
    gan_weight: float = 0.03  # λ
    disc_layers: tuple[int, ...] | None = None  # teacher blocks feeding Conv3D heads; None = (L/2, 3L/4, L-1)
    x_hat_mode: str = "x_t"  # "x_t": x̂ = x_t - t_i ŷ (decision) | "x1": x̂ = x1 - ŷ (paper's literal)
    dmd_norm: str = "dmd2"  # "dmd2": mean|x̂ - g_real| per sample | "l1diff": the paper's printed normaliser
    student_kind: str = "tmd"  # "tmd" (decoupled, rollout) | "dmd" (DMD2-v baseline, Eq. 18)
    kd_warmup_iterations: int = 0  # one-step DMD2-v baseline only: regress teacher ODE pairs first


@dataclass
class TrainConfig:
    """Everything `tmd distill` needs; presets below, YAML overrides of known fields only."""

    name: str = "tmd"
    data: str = ""  # folder of training shards (tmd make-data)
    output_dir: str = "runs/tmd"
    stages: tuple[str, ...] = ("stage1", "stage2")
    batch_size: int = 64  # global batch (split across processes)
    seed: int = 0
    mixed_precision: str = "no"  # "no" | "bf16" (Accelerate)
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0  # 0 disables the EMA of the student
    log_every: int = 10
    checkpoint_every: int = 200
    validate_every: int = 0  # 0 disables validation samples
    validation_seeds: tuple[int, ...] = (0, 1)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)


def wan21_1p3b() -> TrainConfig:
    """Paper settings for Wan2.1 1.3B (TMD-N2H5, M = 2)."""
    return TrainConfig(name="wan21_1p3b")


def wan21_14b() -> TrainConfig:
    """Paper settings for Wan2.1 14B (TMD-N4H5, M = 1)."""
    cfg = TrainConfig(name="wan21_14b", mixed_precision="bf16", gradient_checkpointing=True)
    cfg.model.head_blocks = 5
    cfg.schedule.outer_steps, cfg.schedule.inner_steps = 1, 4
    cfg.stage1.lr = 1e-5
    cfg.stage2.iterations = 12000
    return cfg


def tiny() -> TrainConfig:
    """A few iterations on a tiny model: tests and smoke runs on CPU."""
    cfg = TrainConfig(name="tiny", batch_size=2, log_every=1, checkpoint_every=5)
    cfg.model.head_blocks = 1
    cfg.stage1.iterations = 10
    cfg.stage1.lr = 1e-3
    cfg.stage2.iterations = 10
    cfg.stage2.lr_student = cfg.stage2.lr_fake = cfg.stage2.lr_disc = 1e-4
    return cfg


PRESETS = {"wan21_1p3b": wan21_1p3b, "wan21_14b": wan21_14b, "tiny": tiny}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def apply_overrides(cfg, overrides: dict, where: str = "config"):
    """Set known fields from a nested dict (e.g. parsed YAML); an unknown key raises ConfigError."""
    names = {f.name: f for f in dataclasses.fields(cfg)}
    for key, value in (overrides or {}).items():
        if key not in names:
            raise ConfigError(f"unknown key {where}.{key}: known keys are {sorted(names)}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key} is a section; give a mapping, got {value!r}")
            apply_overrides(current, value, f"{where}.{key}")
        elif isinstance(current, tuple) and isinstance(value, list):
            setattr(cfg, key, tuple(value))
        else:
            setattr(cfg, key, value)
    return cfg


def load_config(preset_name: str = "wan21_1p3b", yaml_path: str | Path | None = None, **overrides) -> TrainConfig:
    """A preset, then a YAML file's overrides, then keyword overrides (all checked against known fields)."""
    cfg = preset(preset_name)
    if yaml_path:
        import yaml

        p = Path(yaml_path)
        if not p.exists():
            raise ConfigError(f"no config file at {p}")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p} must hold a mapping of config keys, got {type(data).__name__}")
        apply_overrides(cfg, data, where=p.name)
    apply_overrides(cfg, overrides)
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
