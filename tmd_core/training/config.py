"""Typed training configuration with named presets and strict YAML overrides (docs/method.md §4–5, §7)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, InputError
from ..fusion import FUSION_KINDS
from ..schedule import TMDSchedule
from ..validation import check_choice, check_float, check_int, check_output_folder, check_seed


@dataclass
class ModelConfig:
    teacher: str = ""  # teacher checkpoint (any layout load_teacher reads) or toy:teacher
    head_blocks: int = 5  # H: blocks in the flow head
    fusion: str = "gated"  # "gated" | "concat"
    student_init: str = ""  # optional tmd/1 checkpoint to start from (e.g. the stage-1 result); lora mode: a TMD patch
    # "full": student and fake score are whole copies of the teacher, every weight trained. "lora": one copy of
    # the teacher's weights serves teacher, student and fake score; student and fake score train LoRAs (peft) on
    # its blocks, the student also its fusion layer and gap embedding; the result is a TMD patch (docs/patches.md)
    mode: str = "full"
    lora_rank: int = 64  # r of the student's and the fake score's LoRAs (lora mode)
    lora_alpha: float | None = None  # peft's lora_alpha (ΔW = alpha / r · B A); None: alpha = r (scale 1)
    # the linears of every block that get a LoRA: self_attn (q, k, v, o), cross_attn (q, k, v, o), ffn (both)
    lora_targets: tuple[str, ...] = ("self_attn", "cross_attn", "ffn")


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
    # dtype of the trained weights and their gradients: "fp32" | "bf16" (AdamW moments stay fp32 either way;
    # bf16 needs mixed_precision: bf16). docs/design.md §7 "Precision and placement"
    master_dtype: str = "fp32"
    # the frozen teacher on every process: "replicate" (whole, in teacher_dtype) | "shard" (FSDP2 units per
    # block and per embedding module, gathered while they run; FSDP2 launches and one process only)
    teacher_placement: str = "replicate"
    teacher_dtype: str = "auto"  # "auto" (bf16 on a GPU, fp32 on the CPU: bf16 is slow there) | "bf16" | "fp32"
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0  # 0 disables the EMA of the student
    log_every: int = 10
    checkpoint_every: int = 200
    validate_every: int = 0  # validation samples every K steps and after the last step of a stage; 0: none
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
    cfg = TrainConfig(name="wan21_14b", mixed_precision="bf16", gradient_checkpointing=True, master_dtype="bf16",
                      teacher_placement="shard")
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
    # TM-MF on real data in every student update (docs/method.md §5): without it the flow head of the toy
    # student stopped using its inner noise (inner/outer spread 0.05). 0.3 of the sweep {0, 0.1, 0.3, 1}: the
    # most diverse weight whose flow head still uses its noise (inner/outer >= 0.3; docs/toy_world.md §5)
    cfg.stage2.tmmf_weight = 0.3
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
            raise ConfigError(f"--config: no config file at {p}: check the path")
        if p.is_dir():
            raise ConfigError(f"--config: {p} is a folder, expected a YAML file of config keys")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"--config: {p} is not a text (UTF-8 YAML) file") from e
        except yaml.YAMLError as e:  # broken syntax, and tags such as !!python/object (safe_load builds no objects)
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"--config: {p} is not valid YAML{at} ({problem}); only plain keys and values are read "
                              "(no !!python tags): fix the file") from e
        if not isinstance(data, dict):
            raise ConfigError(f"--config: {p} must hold a mapping of config keys, got {type(data).__name__}")
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
MASTER_DTYPES = ("fp32", "bf16")
MODEL_MODES = ("full", "lora")
TEACHER_PLACEMENTS = ("replicate", "shard")
TEACHER_DTYPES = ("auto", "bf16", "fp32")
RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Files that mean an output_dir holds a run (a log with at least one step, or saved state / students).
RUN_FILES = ("state-stage1.safetensors", "state-stage2.safetensors", "stage1.safetensors")


def _positive(name: str, value) -> float:
    return check_float(name, value, 0.0, lo_open=True, error=ConfigError)


def _unit(name: str, value, hi_open: bool = False) -> float:
    return check_float(name, value, 0.0, 1.0, hi_open=hi_open, error=ConfigError)


def _betas(name: str, value) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(f"{name} must be two numbers [beta1, beta2] in [0, 1), got {value!r}")
    for k, b in enumerate(value):
        check_float(f"{name}[{k}]", b, 0.0, 1.0, hi_open=True, error=ConfigError)


def check_settings(cfg: TrainConfig, world_size: int = 1) -> None:
    """Every field of `cfg` on its own: types, ranges, finiteness, choices (no file is opened)."""
    from .data import batch_divisibility_message

    if not isinstance(cfg.name, str) or not RUN_NAME.fullmatch(cfg.name) or ".." in cfg.name:
        raise ConfigError(f"name {cfg.name!r} must be a plain file name (letters, digits, '_', '-', '.'): the student "
                          "is saved as <output_dir>/<name>.safetensors")
    if not str(cfg.output_dir).strip():
        raise ConfigError("output_dir is empty: give the run folder (--output-dir PATH)")
    try:  # YAML/--set overrides assign fields one by one: validate the schedule as a whole
        TMDSchedule(**dataclasses.asdict(cfg.schedule))
    except InputError as e:
        raise ConfigError(f"schedule: {e}") from e
    stages = tuple(cfg.stages)
    bad = [s for s in stages if s not in STAGES]
    if not stages or bad or list(stages) != sorted(set(stages)):
        raise ConfigError(f"stages must be stage1, stage2 or both in that order, got {list(stages)}")
    check_int("batch_size", cfg.batch_size, 1, error=ConfigError)
    if cfg.batch_size % world_size:
        raise ConfigError(batch_divisibility_message(cfg.batch_size, world_size))
    check_int("seed", cfg.seed, 0, 2**64 - 1, error=ConfigError)
    for i, s in enumerate(cfg.validation_seeds):
        check_seed(f"validation_seeds[{i}]", s, error=ConfigError)
    check_choice("mixed_precision", cfg.mixed_precision, ("no", "bf16"), error=ConfigError)
    check_choice("master_dtype", cfg.master_dtype, MASTER_DTYPES, error=ConfigError)
    check_choice("teacher_placement", cfg.teacher_placement, TEACHER_PLACEMENTS,
                 "shard needs an FSDP2 launch (configs/accelerate_fsdp2.yaml)", error=ConfigError)
    check_choice("teacher_dtype", cfg.teacher_dtype, TEACHER_DTYPES, error=ConfigError)
    if cfg.master_dtype == "bf16" and cfg.mixed_precision != "bf16":
        raise ConfigError("master_dtype: bf16 keeps the trained weights in bf16, so the networks compute in bf16: set "
                          "mixed_precision: bf16 too (--set mixed_precision=bf16), or keep master_dtype: fp32")
    check_choice("device", cfg.device, ("auto", "cpu"), "GPUs are chosen by accelerate launch", error=ConfigError)
    for name in ("log_every", "checkpoint_every"):
        check_int(name, getattr(cfg, name), 1, error=ConfigError)
    check_int("validate_every", cfg.validate_every, 0, hint="0 turns validation samples off", error=ConfigError)
    _unit("ema_decay", cfg.ema_decay, hi_open=True)
    check_int("model.head_blocks", cfg.model.head_blocks, 1, error=ConfigError)
    check_choice("model.fusion", cfg.model.fusion, FUSION_KINDS, error=ConfigError)
    check_choice("model.mode", cfg.model.mode, MODEL_MODES, "lora trains LoRAs on one shared copy of the teacher",
                 error=ConfigError)
    if cfg.model.mode == "lora":
        from ..lora import check_lora_settings

        check_lora_settings(cfg.model.lora_rank, cfg.model.lora_alpha, cfg.model.lora_targets)
        if cfg.stage2.student_kind == "dmd":
            raise ConfigError("model.mode lora trains TMD students (written as TMD patches); the DMD2-v baseline "
                              "(stage2.student_kind: dmd) trains in model.mode full")
    s1, s2 = cfg.stage1, cfg.stage2
    for stage in stages:
        check_int(f"{stage}.iterations", getattr(cfg, stage).iterations, 1, error=ConfigError)
    _positive("stage1.lr", s1.lr)
    check_float("stage1.weight_decay", s1.weight_decay, 0.0, error=ConfigError)
    _betas("stage1.betas", s1.betas)
    check_float("stage1.cfg_scale", s1.cfg_scale, 0.0, error=ConfigError)
    _unit("stage1.cond_dropout", s1.cond_dropout)
    _unit("stage1.r_equals_s_share", s1.r_equals_s_share)
    _positive("stage1.s_shift", s1.s_shift)
    check_float("stage1.fd_delta", s1.fd_delta, 0.0, 0.5, lo_open=True, hi_open=True, error=ConfigError)
    if s1.norm_c is not None:
        _positive("stage1.norm_c", s1.norm_c)
    for name in ("lr_student", "lr_fake", "lr_disc"):
        _positive(f"stage2.{name}", getattr(s2, name))
    check_float("stage2.weight_decay", s2.weight_decay, 0.0, error=ConfigError)
    _betas("stage2.betas", s2.betas)
    check_int("stage2.student_every", s2.student_every, 1, error=ConfigError)
    check_float("stage2.real_cfg", s2.real_cfg, 0.0, error=ConfigError)
    _positive("stage2.dmd_shift", s2.dmd_shift)
    check_float("stage2.gan_weight", s2.gan_weight, 0.0, error=ConfigError)
    check_choice("stage2.x_hat_mode", s2.x_hat_mode, ("x_t", "x1"), error=ConfigError)
    check_choice("stage2.dmd_norm", s2.dmd_norm, ("dmd2", "l1diff"), error=ConfigError)
    check_choice("stage2.student_kind", s2.student_kind, ("tmd", "dmd"), error=ConfigError)
    check_int("stage2.kd_warmup_iterations", s2.kd_warmup_iterations, 0, error=ConfigError)
    check_float("stage2.tmmf_weight", s2.tmmf_weight, 0.0, error=ConfigError)
    if s2.disc_layers is not None:
        for i, v in enumerate(s2.disc_layers):
            check_int(f"stage2.disc_layers[{i}]", v, 0, error=ConfigError)
    if s2.student_kind == "dmd" and s2.tmmf_weight > 0:
        raise ConfigError("stage2.tmmf_weight needs a TMD student (the DMD2-v baseline has no flow head): set it to 0")
    if s2.student_kind == "dmd" and "stage1" in stages:
        raise ConfigError("the DMD2-v baseline (stage2.student_kind: dmd) has no stage 1: set stages: [stage2]")
    if s2.student_kind == "tmd" and s2.kd_warmup_iterations:
        raise ConfigError("stage2.kd_warmup_iterations is for the DMD2-v baseline (student_kind: dmd): set it to 0")
    if (
        stages == ("stage2",) and s2.student_kind == "tmd" and not cfg.model.student_init
        and not s2.init_from_teacher
    ):
        raise ConfigError(
            "stage 2 needs a student: run stage 1 first (stages: [stage1, stage2]), set model.student_init to "
            "a stage-1 tmd/1 checkpoint, or set stage2.init_from_teacher: true to start from the teacher"
        )


def teacher_config(cfg: TrainConfig, teacher=None) -> dict:
    """The teacher's transformer config: from the module when one is given, else from the header of
    `model.teacher` (no weights are read). ConfigError naming model.teacher for a missing or unusable file."""
    if teacher is not None:
        from ..wan_build import transformer_config_dict

        return transformer_config_dict(teacher)
    if not cfg.model.teacher:
        raise ConfigError("model.teacher is empty: give the teacher checkpoint (--teacher PATH or model.teacher)")
    from ..errors import CheckpointError
    from ..loading import describe_checkpoint

    if not Path(cfg.model.teacher).exists():
        raise ConfigError(f"teacher checkpoint {cfg.model.teacher!r} does not exist: check model.teacher")
    try:
        info = describe_checkpoint(cfg.model.teacher)
    except CheckpointError as e:
        raise ConfigError(f"model.teacher: {e}") from e
    if info["kind"] == "tmd":
        raise ConfigError(f"model.teacher {cfg.model.teacher!r} is a TMD student: the teacher is the plain Wan model "
                          "it was made from (a student to continue goes in model.student_init)")
    return info["transformer_config"]


def check_files(cfg: TrainConfig, tcfg: dict, *, data: bool = True) -> None:
    """The teacher's own facts against the settings (head_blocks, disc_layers), the data (unless `data` is
    False: it is yet to be made) and model.student_init against the teacher, from headers and index files."""
    from ..errors import CheckpointError
    from .builders import check_same_architecture
    from .data import read_index

    layers = tcfg["num_layers"]
    if cfg.stage2.student_kind == "tmd" or "stage1" in cfg.stages:
        check_int("model.head_blocks", cfg.model.head_blocks, 1, layers - 1, error=ConfigError,
                  hint=f"the teacher has {layers} blocks and the backbone needs at least one (paper: 5 of 30)")
    if cfg.stage2.disc_layers is not None and "stage2" in cfg.stages:
        from .teacher_features import check_layers

        check_layers(cfg.stage2.disc_layers, layers)
    if data:
        index = read_index(cfg.data)
        check_data_fits_config(tcfg, index.get("latent_shape"), index.get("text_dim"), cfg.data)
    if cfg.model.student_init and cfg.model.mode == "lora":
        check_lora_init(cfg, tcfg)
    elif cfg.model.student_init:
        from ..checkpoint import read_tmd_info

        if not Path(cfg.model.student_init).is_file():
            raise ConfigError(f"model.student_init {cfg.model.student_init!r} does not exist: give a tmd/1 checkpoint")
        try:
            info = read_tmd_info(cfg.model.student_init)
        except CheckpointError as e:
            raise ConfigError(f"model.student_init: {e}") from e
        check_same_architecture(tcfg, info["transformer_config"], cfg.model.student_init)


def check_lora_init(cfg: TrainConfig, tcfg: dict) -> None:
    """model.student_init of a LoRA-mode run: a TMD patch of a LoRA-mode run (LoRA factors and fusion/gap only)
    of this teacher's architecture and this run's rank (header only)."""
    from ..errors import CheckpointError
    from ..patch import check_same_architecture
    from ..patch_file import read_patch_info

    path = cfg.model.student_init
    if not Path(path).is_file():
        raise ConfigError(f"model.student_init {path!r} does not exist: give a TMD patch of a LoRA-mode run")
    try:
        info = read_patch_info(path)
    except CheckpointError as e:
        raise ConfigError(f"model.student_init: {e} (model.mode lora continues a TMD patch of a LoRA-mode run; "
                          "a full student continues in model.mode full)") from e
    try:
        check_same_architecture(info["transformer_config"], tcfg, Path(path).name, "the teacher")
    except CheckpointError as e:
        raise ConfigError(f"model.student_init: {e}") from e
    lora = info["lora"]
    if lora.get("full_tensors", 0):
        raise ConfigError(f"model.student_init {Path(path).name} changes {lora['full_tensors']} tensors outside the "
                          "LoRA matrices (a patch extracted from a full student): continue it with model.mode full")
    if lora.get("rank") != cfg.model.lora_rank:
        raise ConfigError(f"model.student_init {Path(path).name} has LoRA rank {lora.get('rank')}, model.lora_rank is "
                          f"{cfg.model.lora_rank}: set model.lora_rank: {lora.get('rank')}")


# Fields that may change between a run and its --resume (everything else must match).
RESUMABLE_CHANGES = {"log_every", "checkpoint_every", "validate_every", "validation_seeds", "output_dir", "data"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(saved: Path, cfg: TrainConfig) -> list[str]:
    """Dotted fields where `cfg` differs from the run's saved config.yaml (RESUMABLE_CHANGES left out)."""
    import yaml

    try:
        old = _flat(yaml.safe_load(saved.read_text(encoding="utf-8")) or {})
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as e:
        raise ConfigError(f"{saved} is not a readable run config ({e}); restore it, or start a new output_dir") from e
    new = _flat(yaml.safe_load(to_yaml(cfg)))
    # a key the saved config lacks was added to TrainConfig after that run started: the run had its default
    default = _flat(yaml.safe_load(to_yaml(TrainConfig())))
    return sorted(k for k in new if k.split(".")[0] not in RESUMABLE_CHANGES
                  and old.get(k, default.get(k)) != new[k])


def check_data_fits_config(tcfg: dict, shape, text_dim, data_name) -> None:
    """Latents [C, F, H, W] and text width of a data set against the teacher's transformer config."""
    if not shape or shape[0] != tcfg["in_channels"] or text_dim != tcfg["text_dim"]:
        raise ConfigError(
            f"data {data_name} has {shape and shape[0]}-channel latents and {text_dim}-wide text embeddings, the "
            f"teacher expects {tcfg['in_channels']} and {tcfg['text_dim']}: make the data with this teacher "
            "(tmd make-data) and its text encoder")
    if any(n % p for n, p in zip(shape[1:], tcfg["patch_size"])):
        raise ConfigError(f"data latents {tuple(shape)} are not divisible by the teacher's patch size "
                          f"{tuple(tcfg['patch_size'])}: make the data with this teacher")


def holds_run(out: Path) -> list[str]:
    """What in `out` makes it a run to resume: saved state, a stage-1 student, or a log with a training step."""
    found = [n for n in RUN_FILES if (out / n).is_file()]
    log = out / "log.jsonl"
    if log.is_file() and any('"step"' in line for line in log.read_text(encoding="utf-8", errors="replace").splitlines()):
        found.append("log.jsonl")
    return found


def check_output_dir(cfg: TrainConfig, resume: bool) -> None:
    """The run folder: writable; new unless `resume`; with `resume`, a started run whose config matches."""
    out = Path(cfg.output_dir)
    check_output_folder("output_dir", out, error=ConfigError)
    final = out / f"{cfg.name}.safetensors"
    found = holds_run(out) if out.is_dir() else []
    if not resume:
        if final.exists():
            found.append(final.name)
        if found:
            raise ConfigError(f"output_dir {out} already holds a run ({', '.join(found)}): pass --resume to continue "
                              "it, or choose another output_dir")
        return
    saved = out / "config.yaml"
    if not saved.is_file() and not found:
        raise ConfigError(f"--resume: there is no run to resume in {out} (no config.yaml or saved state): run the same "
                          "command without --resume to start it")
    if saved.is_file():
        changed = config_changes(saved, cfg)
        if changed:
            raise ConfigError(
                f"--resume with a different config ({', '.join(changed[:6])}): re-run the same command, "
                f"or start a new output_dir (only {sorted(RESUMABLE_CHANGES)} may change)"
            )


def check_run(cfg: TrainConfig, world_size: int = 1, *, teacher=None, resume: bool = False,
              data: bool = True) -> dict:
    """Everything a run needs, checked before anything heavy is loaded: what `tmd distill --dry-run` runs,
    and what `run_distill` runs first (`data=False`: the data set is yet to be made, see distill_in_process).
    Returns the teacher's transformer config."""
    check_settings(cfg, world_size)
    tcfg = teacher_config(cfg, teacher)
    check_files(cfg, tcfg, data=data)
    check_output_dir(cfg, resume)
    return tcfg


def check_config(cfg: TrainConfig, world_size: int = 1, *, teacher_given: bool = False) -> None:
    """Raise ConfigError for settings that cannot run, before anything heavy is loaded (no output folder check).

    Args:
        world_size: number of processes (the global batch is split across them).
        teacher_given: a teacher module is passed in-process, so `model.teacher` may be empty (its facts are
            then checked by `check_run` with the module).
    """
    check_settings(cfg, world_size)
    if teacher_given and not cfg.model.teacher:
        from .data import read_index

        read_index(cfg.data)
        return
    check_files(cfg, teacher_config(cfg))
