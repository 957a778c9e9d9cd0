"""Typed training configuration with named presets and strict YAML overrides (docs/method.md §4–5, §7)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, InputError
from ..schedule import TMDSchedule


@dataclass
class ModelConfig:
    teacher: str = ""  # teacher checkpoint (any layout load_teacher reads) or toy:teacher
    head_blocks: int = 5  # H: blocks in the flow head
    fusion: str = "gated"  # "gated" | "concat"
    student_init: str = ""  # optional tmd/1 checkpoint to start from (e.g. the stage-1 result)


@dataclass
class Stage1Config:
    """TM-MF pretraining (docs/method.md §4, Alg. 2)."""

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
    """DMD2-v with flow-head rollout (docs/method.md §5)."""

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
    init_from_teacher: bool = False  # allow a teacher-initialised TMD student without stage 1 / student_init
    # weight of the stage-1 TM-MF loss on the real data, added to every student update (TMD only; 0 = the
    # paper's stage 2). DMD and GAN match the distribution of x̂ only, which a deterministic transition can
    # match; the TM-MF term keeps the flow head a sampler of p(y | m) (docs/method.md §5).
    tmmf_weight: float = 0.0


@dataclass
class TrainConfig:
    """Everything `tmd distill` needs; presets below, YAML overrides of known fields only."""

    name: str = "tmd"
    data: str = ""  # folder of training shards (tmd make-data)
    output_dir: str = "runs/tmd"
    stages: tuple[str, ...] = ("stage1", "stage2")
    batch_size: int = 64  # global batch (split across processes)
    seed: int = 0
    device: str = "auto"  # "auto" (Accelerate's choice: GPU if present) | "cpu"
    mixed_precision: str = "no"  # "no" | "bf16" (Accelerate)
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0  # 0 disables the EMA of the student
    log_every: int = 10
    checkpoint_every: int = 200
    validate_every: int = 0  # 0 disables validation samples
    validation_seeds: tuple[int, ...] = (0, 1)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: TMDSchedule = field(default_factory=TMDSchedule)  # M, N and grids the student is trained for
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
    cfg.stage2.disc_layers = (19, 29, 39)  # docs/method.md §5 for 14B (the L/2, 3L/4, L-1 rule gives 20, 30, 39)
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


def toy() -> TrainConfig:
    """The toy world (tmd_core.toy): 12-block teacher, H = 2 (H/L = 1/6 as the paper's 5/30), CPU minutes.

    Differences from the paper, for a 3M-parameter model on two CPU cores: larger learning rates,
    batch 16, 1.5k + 2k iterations (paper: 3k + 4k), and both grids shifted with γ = 3 (the toy
    teacher's own sampling shift at 32 tokens) instead of Wan's γ = 10. With γ = 10 and two inner steps
    the inner grid is {0.999, 0.909, 0}: the first step is nearly empty and the head has to jump from
    0.909 to 0 in one step; γ = 3 gives {0.999, 0.75, 0}.
    """
    cfg = TrainConfig(name="toy_tmd", batch_size=16, device="cpu", ema_decay=0.95, log_every=10,
                      checkpoint_every=100, output_dir="runs/toy/tmd")
    cfg.model.head_blocks = 2
    cfg.schedule.outer_shift = cfg.schedule.inner_shift = 3.0
    cfg.stage1.iterations = 1500
    cfg.stage1.lr = 3e-4
    cfg.stage2.iterations = 2000  # student every 5th: 400 generator updates
    cfg.stage2.lr_student = 1e-4
    cfg.stage2.lr_fake = cfg.stage2.lr_disc = 2e-4
    cfg.stage2.real_cfg = 4.0  # the toy teacher's CFG (tmd_core.toy.evaluate.TEACHER_CFG)
    return cfg


PRESETS = {"wan21_1p3b": wan21_1p3b, "wan21_14b": wan21_14b, "tiny": tiny, "toy": toy}


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
        else:
            setattr(cfg, key, _coerce(value, str(names[key].type), f"{where}.{key}"))
    return cfg


def _coerce(value, annotation: str, where: str):
    """Check a scalar against its field's annotation; YAML lists become tuples, `1e-4` (a YAML string) a float."""
    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} cannot be empty (null)")
    base = annotation.split("|")[0].strip()
    if base.startswith("tuple"):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(value)
    if base == "float":
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif base == "bool" and isinstance(value, bool):
        return value
    elif base == "str" and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    elif base not in ("float", "int", "bool", "str"):
        return value
    raise ConfigError(f"{where} must be a {base}, got {value!r}")


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


def to_yaml(cfg) -> str:
    """The resolved config as YAML (tuples as lists), loadable again as an override file."""
    import yaml

    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return yaml.safe_dump(plain(to_dict(cfg)), sort_keys=False, allow_unicode=True)


STAGES = ("stage1", "stage2")


def check_config(cfg: TrainConfig, world_size: int = 1, *, teacher_given: bool = False) -> None:
    """Raise ConfigError for settings that cannot run, before anything heavy is loaded.

    Args:
        world_size: number of processes (the global batch is split across them).
        teacher_given: a teacher module is passed in-process, so `model.teacher` may be empty.
    """
    from .data import batch_divisibility_message, read_index

    try:  # YAML/--set overrides assign fields one by one: validate the schedule as a whole
        TMDSchedule(**dataclasses.asdict(cfg.schedule))
    except InputError as e:
        raise ConfigError(f"schedule: {e}") from e
    stages = tuple(cfg.stages)
    bad = [s for s in stages if s not in STAGES]
    if not stages or bad or list(stages) != sorted(set(stages)):
        raise ConfigError(f"stages must be stage1, stage2 or both in that order, got {list(stages)}")
    if cfg.batch_size < 1 or cfg.batch_size % world_size:
        raise ConfigError(batch_divisibility_message(cfg.batch_size, world_size))
    if cfg.mixed_precision not in ("no", "bf16"):
        raise ConfigError(f"mixed_precision must be 'no' or 'bf16', got {cfg.mixed_precision!r}")
    if cfg.device not in ("auto", "cpu"):
        raise ConfigError(f"device must be 'auto' or 'cpu', got {cfg.device!r} (GPUs are chosen by accelerate launch)")
    for name in ("log_every", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    for stage in stages:
        if getattr(cfg, stage).iterations < 1:
            raise ConfigError(f"{stage}.iterations must be >= 1, got {getattr(cfg, stage).iterations}")
    if cfg.stage2.student_kind not in ("tmd", "dmd"):
        raise ConfigError(f"stage2.student_kind must be 'tmd' or 'dmd', got {cfg.stage2.student_kind!r}")
    if cfg.stage2.tmmf_weight < 0 or cfg.stage2.tmmf_weight != cfg.stage2.tmmf_weight:
        raise ConfigError(f"stage2.tmmf_weight must be >= 0, got {cfg.stage2.tmmf_weight}")
    if cfg.stage2.student_kind == "dmd" and cfg.stage2.tmmf_weight > 0:
        raise ConfigError("stage2.tmmf_weight needs a TMD student (the DMD2-v baseline has no flow head): set it to 0")
    if cfg.stage2.student_kind == "dmd" and "stage1" in stages:
        raise ConfigError("the DMD2-v baseline (stage2.student_kind: dmd) has no stage 1: set stages: [stage2]")
    if (
        stages == ("stage2",) and cfg.stage2.student_kind == "tmd" and not cfg.model.student_init
        and not cfg.stage2.init_from_teacher
    ):
        raise ConfigError(
            "stage 2 needs a student: run stage 1 first (stages: [stage1, stage2]), set model.student_init to "
            "a stage-1 tmd/1 checkpoint, or set stage2.init_from_teacher: true to start from the teacher"
        )
    if cfg.model.student_init and not Path(cfg.model.student_init).is_file():
        raise ConfigError(f"model.student_init {cfg.model.student_init!r} does not exist: give a tmd/1 checkpoint")
    if not teacher_given:
        if not cfg.model.teacher:
            raise ConfigError("model.teacher is empty: give the teacher checkpoint (--teacher PATH or model.teacher)")
        if not Path(cfg.model.teacher).exists():
            raise ConfigError(f"teacher checkpoint {cfg.model.teacher!r} does not exist: check model.teacher")
    read_index(cfg.data)
