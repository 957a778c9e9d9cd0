"""Memory plan of a distillation run: bytes per process of every network's weights, gradients, optimiser
state and EMA, replicated (one process, DDP) or sharded (FSDP2), for `tmd distill --plan` (docs/design.md §7).

Parameter counts come from the exact architecture built on the meta device (no weights are allocated), so
the plan of the 14B preset takes a second on any machine. Per trained parameter the plan counts:

    weights    master dtype (`master_dtype`, fp32: 4 B, bf16: 2 B)
    gradients  master dtype
    optimiser  AdamW's two moments in fp32 (8 B): torch's AdamW for fp32 masters, the loop's MasterAdamW
               (steps.py) for bf16 masters
    EMA        fp32 (4 B) for the student when ema_decay > 0

and the frozen teacher's weights in `teacher_dtype` ("auto" is bf16 here: the plan is for GPUs). These are
the run config's own settings (`master_dtype`, `teacher_placement`, `teacher_dtype`), so the plan describes
the run the same config trains; `tmd distill --plan` flags override them for a what-if. Sharded mode divides
every per-parameter figure by the process count (FSDP2 keeps 1/N of each parameter, gradient and moment per
process); with `teacher_placement: shard` the teacher too, except the parameters the network holds itself
(Wan's scale_shift_table), which `sharding.shard_frozen` leaves whole. With sharding over several processes
what FSDP2 gathers while a loss runs is added: the network's parameters outside its blocks plus two blocks
(the one running and the next being gathered); for a sharded teacher two blocks. Activations and the
allocator's slack are not counted: the plan reports what is left for them.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from importlib import resources

import torch

from ..errors import ConfigError

DTYPE_BYTES = {"fp32": 4, "bf16": 2}
SHARDING = ("full", "sharded")  # full: every process holds everything (one process, DDP); sharded: FSDP2
TEACHER_MODES = ("shard", "replicate")  # the run config's teacher_placement
# The Wan2.1 architecture of each preset (the transformer config shipped in tmd_core/configs).
PRESET_ARCH = {"wan21_1p3b": "wan21_t2v_1.3b.json", "wan21_14b": "wan21_t2v_14b.json"}
GB = 1e9


@dataclass
class PlanSettings:
    processes: int = 1
    sharding: str = "full"
    master_dtype: str = "fp32"  # dtype of the trained weights and their gradients (config master_dtype)
    optim_dtype: str = "fp32"  # dtype of AdamW's moments: fp32, as the loop keeps them
    teacher_dtype: str = "bf16"
    teacher: str = "replicate"  # with sharding=sharded: the config's teacher_placement (shard | replicate)
    gpu_mem: float | None = None  # bytes of one GPU, for the fits / does-not-fit verdict


@dataclass
class ModelRow:
    name: str
    params: int  # all parameters
    trainable: int  # parameters that get gradients and optimiser state
    bytes: dict = field(default_factory=dict)  # weights, gradients, optimizer, ema -> bytes per process

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


def parse_bytes(text: str, what: str = "--gpu-mem") -> float:
    """'80GB', '80 GiB', '24e9', '80G' -> bytes (GB = 1e9, GiB = 2**30)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*(gib|gb|g|mib|mb|m|b)?\s*", str(text).lower())
    if not m:
        raise ConfigError(f"{what} {text!r} is not a size: write e.g. 80GB or 24GiB")
    unit = {"gib": 2**30, "gb": 1e9, "g": 1e9, "mib": 2**20, "mb": 1e6, "m": 1e6, "b": 1, None: 1e9}[m.group(2)]
    value = float(m.group(1)) * unit
    if value <= 0:
        raise ConfigError(f"{what} {text!r} must be positive")
    return value


def preset_architecture(preset_name: str) -> dict:
    """The teacher transformer config of a Wan preset (ConfigError for presets without one, e.g. toy)."""
    if preset_name not in PRESET_ARCH:
        raise ConfigError(f"--plan knows the Wan architecture of the presets {sorted(PRESET_ARCH)}; for {preset_name!r} "
                          "pass --teacher PATH so the plan reads the architecture from its header")
    text = resources.files("tmd_core.configs").joinpath(PRESET_ARCH[preset_name]).read_text(encoding="utf-8")
    return json.loads(text)


def build_models(tcfg: dict, cfg, device="meta") -> dict[str, torch.nn.Module]:
    """The networks of a run on `device` (meta: nothing allocated): teacher, stage-1/2 student, fake score
    and discriminator, with the run's head_blocks, fusion and disc_layers. Random weights on a real device."""
    from ..model import TMDModel
    from ..wan_build import build_empty_wan
    from .discriminator import Discriminator

    with torch.device(device):
        teacher = build_empty_wan(tcfg)
        if cfg.model.mode == "lora":  # views of the teacher's weights with their own LoRAs (tmd_core/lora.py)
            from ..lora import FAKE_ADAPTER, STUDENT_ADAPTER, add_lora

            m = cfg.model
            teacher.requires_grad_(False)
            view = add_lora(teacher, STUDENT_ADAPTER, m.lora_rank, m.lora_alpha, m.lora_targets)
            models = {"teacher": teacher, "student": TMDModel.from_teacher(
                view, head_blocks=m.head_blocks, fusion=m.fusion, schedule=copy.deepcopy(cfg.schedule))}
            if "stage2" in cfg.stages:
                models["fake_score"] = add_lora(teacher, FAKE_ADAPTER, m.lora_rank, m.lora_alpha, m.lora_targets)
                if cfg.stage2.gan_weight > 0:
                    models["discriminator"] = Discriminator.from_teacher(teacher, layers=cfg.stage2.disc_layers)
            return models
        if cfg.stage2.student_kind == "dmd" and "stage1" not in cfg.stages:
            student = copy.deepcopy(teacher)
        else:
            student = TMDModel.from_teacher(copy.deepcopy(teacher), head_blocks=cfg.model.head_blocks,
                                            fusion=cfg.model.fusion, schedule=copy.deepcopy(cfg.schedule))
        models = {"teacher": teacher, "student": student}
        if "stage2" in cfg.stages:
            models["fake_score"] = copy.deepcopy(teacher)
            if cfg.stage2.gan_weight > 0:
                models["discriminator"] = Discriminator.from_teacher(teacher, layers=cfg.stage2.disc_layers)
    return models


def count_params(module: torch.nn.Module, trained_only: bool = False) -> int:
    """Parameters of `module`; with `trained_only` those of a LoRA-mode network that it trains (LoRA factors,
    fusion, gap embedding), not the base weights it shares with the teacher."""
    if not trained_only:
        return sum(p.numel() for p in module.parameters())
    tr = getattr(module, "transformer", module)
    return sum(p.numel() for n, p in module.named_parameters()
               if ".lora_" in n or (module is not tr and not n.startswith("transformer.")))


def settings_for(cfg, processes: int = 1, sharding: str = "sharded", gpu_mem: float | None = None,
                 **overrides) -> PlanSettings:
    """The plan's settings of the run `cfg` trains (its master_dtype, teacher_placement, teacher_dtype; "auto"
    is bf16, the GPU choice), then `overrides` (None values ignored)."""
    s = PlanSettings(processes=processes, sharding=sharding, master_dtype=cfg.master_dtype,
                     teacher_dtype="bf16" if cfg.teacher_dtype == "auto" else cfg.teacher_dtype,
                     teacher=cfg.teacher_placement, gpu_mem=gpu_mem)
    for k, v in overrides.items():
        if v is not None:
            setattr(s, k, v)
    return s


def plan_rows(counts: dict[str, int], cfg, s: PlanSettings, stage: str, teacher_whole: int = 0) -> list[ModelRow]:
    """Per-process bytes of each network alive in `stage` (the teacher is resident in both stages);
    `teacher_whole`: the teacher's parameters that stay whole on every process when it is sharded."""
    check_plan_settings(s)
    shard = s.processes if s.sharding == "sharded" else 1
    master, optim = DTYPE_BYTES[s.master_dtype], DTYPE_BYTES[s.optim_dtype]

    def per_process(n: int, bytes_each: int, divide: int = shard) -> int:
        return -(-n // divide) * bytes_each  # ceil: FSDP2 pads the last shard

    names = ["student", "teacher"] + (["fake_score", "discriminator"] if stage == "stage2" else [])
    rows = []
    for name in names:
        if name not in counts:
            continue
        n = counts[name]
        if name == "teacher":
            tb = DTYPE_BYTES[s.teacher_dtype]
            if s.teacher == "shard" and shard > 1:
                weights = per_process(n - teacher_whole, tb) + teacher_whole * tb
            else:
                weights = n * tb
            rows.append(ModelRow(name, n, 0, {"weights": weights}))
            continue
        b = {"weights": per_process(n, master), "gradients": per_process(n, master),
             "optimizer": 2 * per_process(n, optim)}
        if name == "student" and cfg.ema_decay > 0:
            b["ema"] = per_process(n, 4)
        rows.append(ModelRow(name, n, n, b))
    return rows


def check_plan_settings(s: PlanSettings) -> None:
    from ..validation import check_choice, check_int

    check_int("--processes", s.processes, 1, error=ConfigError)
    check_choice("--sharding", s.sharding, SHARDING, "full = one process or DDP, sharded = FSDP2", error=ConfigError)
    for name in ("master_dtype", "teacher_dtype"):
        check_choice(f"--{name.replace('_', '-')}", getattr(s, name), tuple(DTYPE_BYTES), error=ConfigError)
    check_choice("optim_dtype", s.optim_dtype, ("fp32",), "the loop keeps AdamW's moments in fp32 for either "
                 "master dtype", error=ConfigError)
    check_choice("--teacher-placement", s.teacher, TEACHER_MODES, error=ConfigError)
    if s.teacher == "shard" and s.sharding == "full" and s.processes > 1:
        raise ConfigError("--teacher-placement shard needs --sharding sharded (FSDP2): a DDP run replicates the "
                          "teacher; pass --teacher-placement replicate")


def memory_plan(cfg, tcfg: dict, s: PlanSettings) -> dict:
    """{"stages": {stage: [ModelRow]}, "peak": bytes per process, "counts": {name: params}}."""
    from .sharding import transformer_blocks

    lora = cfg.model.mode == "lora"
    if lora and s.sharding == "sharded" and s.processes > 1:
        raise ConfigError("model.mode lora runs on one process or DDP (one shared copy of the teacher's weights "
                          "cannot be sharded per network): pass --sharding full")
    models = build_models(tcfg, cfg)
    # LoRA mode: student and fake score count what they train; the base they share is the teacher's row
    counts = {k: count_params(m, trained_only=lora and k in ("student", "fake_score")) for k, m in models.items()}
    units = {}  # name -> (parameters outside the blocks, parameters of the largest block)
    for k, m in models.items():
        blocks = [count_params(b) for b in transformer_blocks(m)]
        units[k] = (counts[k] - sum(blocks), max(blocks, default=0))
    whole = teacher_whole_params(models["teacher"])
    stages = {st: plan_rows(counts, cfg, s, st, teacher_whole=whole) for st in cfg.stages}
    states = max(sum(r.total for r in rows) for rows in stages.values())
    gathered = max(gathered_bytes(rows, s, units) for rows in stages.values())
    return {"stages": stages, "states": states, "gathered": gathered, "peak": states + gathered, "counts": counts,
            "settings": s, "lora": {"rank": cfg.model.lora_rank, "targets": list(cfg.model.lora_targets)} if lora else None}


def teacher_whole_params(teacher: torch.nn.Module) -> int:
    """Parameters a sharded teacher keeps whole on every process: the ones the network holds itself, outside
    every child module (sharding.shard_frozen)."""
    return sum(p.numel() for p in teacher.parameters(recurse=False))


def gathered_bytes(rows: list[ModelRow], s: PlanSettings, units: dict) -> int:
    """What FSDP2 holds whole on top of the shards (sharding.py: a unit per block, one per network for the
    rest): while a network's loss runs, its parameters outside the blocks, plus the block running and the
    next one being gathered, in the network's dtype; the largest such figure (0 without sharding)."""
    if s.sharding != "sharded" or s.processes == 1:
        return 0
    sizes = []
    for r in rows:
        rest, block = units[r.name]
        if r.trainable:
            sizes.append((rest + 2 * block) * DTYPE_BYTES[s.master_dtype])
        elif r.name == "teacher" and s.teacher == "shard":  # units per block and per embedding, resharded
            sizes.append(2 * block * DTYPE_BYTES[s.teacher_dtype])
    return max(sizes, default=0)


def format_plan(plan: dict, title: str) -> str:
    s: PlanSettings = plan["settings"]
    sharded = s.sharding == "sharded" and s.processes > 1
    layout = "FSDP2 sharded" if sharded else ("one process" if s.processes == 1 else "full replica per process")
    mode = (f"{s.processes} process(es), {layout}, {s.master_dtype} master weights + {s.optim_dtype} AdamW moments, "
            f"teacher {s.teacher_dtype}" + (f" {'sharded' if s.teacher == 'shard' else 'replicated'}" if sharded else ""))
    lines = [f"memory plan: {title}", f"  {mode}"]
    if plan.get("lora"):
        lines.append(f"  LoRA mode, rank {plan['lora']['rank']} on {', '.join(plan['lora']['targets'])}: one copy of "
                     "the base weights (the teacher row) serves teacher, student and fake score; their rows count "
                     "the LoRAs (the student's with its fusion layer and gap embedding)")
    lines.append("  bytes per process (GB = 1e9 bytes):")
    cols = ("weights", "gradients", "optimizer", "ema")
    for stage, rows in plan["stages"].items():
        lines.append(f"  {stage}: {'model':<14}{'params':>16}" + "".join(f"{c:>11}" for c in cols) + f"{'total':>11}")
        for r in rows:
            cells = "".join(f"{r.bytes[c] / GB:>11.2f}" if c in r.bytes else f"{'-':>11}" for c in cols)
            lines.append(f"          {r.name:<14}{r.params:>16,}{cells}{r.total / GB:>11.2f}")
        lines.append(f"          {'total':<14}{'':>16}{'':>44}{sum(r.total for r in rows) / GB:>11.2f}")
    peak = plan["peak"]
    lines.append(f"  per-process states (largest stage): {plan['states'] / GB:.2f} GB")
    if plan["gathered"]:
        lines.append(f"  + gathered while a loss runs (a network's non-block part + 2 blocks): {plan['gathered'] / GB:.2f} GB")
    lines.append(f"  per-process total: {peak / GB:.2f} GB")
    if s.gpu_mem:
        left = s.gpu_mem - peak
        verdict = (f"fits: {peak / GB:.2f} GB of {s.gpu_mem / GB:.0f} GB, {left / GB:.2f} GB left for activations"
                   if left > 0 else
                   f"does not fit: needs {peak / GB:.2f} GB of {s.gpu_mem / GB:.0f} GB before activations; shard "
                   "(--sharding sharded) over more processes or use bf16 master weights")
        lines.append(f"  {verdict}")
    lines.append("  not counted: activations, allocator slack")
    return "\n".join(lines)


def measure_bytes(module: torch.nn.Module, *, optim_step: bool = True, ema: bool = False,
                  chunk_elements: int = 1 << 62) -> dict:
    """Measured bytes of a real module: its parameters, gradients and the loop's AdamW moments after one step
    (steps.make_optimizer for the parameters' dtype: torch's AdamW for fp32, MasterAdamW for bf16), and an
    EMA copy (the loop's `EMA`), counted from the tensors (`Tensor.nbytes`; a DTensor counts its local shard).

    Gradients are zeros of each parameter (no forward is needed: what is measured is storage). With
    `chunk_elements`, gradients, moments and EMA are made for that many parameter elements at a time and
    freed before the next chunk, so a 1.3B model is measured in its own size plus a chunk of memory."""
    from .state import EMA
    from .steps import make_optimizer

    def local(t):
        return t.to_local() if hasattr(t, "to_local") else t

    out = {"weights": sum(local(p).nbytes for p in module.parameters())}
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    chunks, cur, size = [], [], 0
    for n, p in named:
        cur.append((n, p))
        size += p.numel()
        if size >= chunk_elements:
            chunks.append(cur)
            cur, size = [], 0
    chunks += [cur] if cur else []
    if optim_step:
        out["gradients"] = out["optimizer"] = 0
    if ema:
        out["ema"] = 0
    for chunk in chunks:
        params = [p for _, p in chunk]
        if optim_step:
            for p in params:
                p.grad = torch.zeros_like(p)
            master = "bf16" if params[0].dtype == torch.bfloat16 else "fp32"
            opt = make_optimizer(params, 0.0, (0.9, 0.999), 0.0, master)
            opt.step()
            out["gradients"] += sum(local(p.grad).nbytes for p in params)
            out["optimizer"] += sum(local(v).nbytes for st in opt.state.values() for k, v in st.items()
                                    if isinstance(v, torch.Tensor) and k != "step")
            del opt
            for p in params:
                p.grad = None
        if ema:
            holder = torch.nn.ParameterList(params)  # the loop's EMA over this chunk's parameters
            out["ema"] += sum(local(v).nbytes for v in EMA(holder, 0.5).shadow.values())
    return out
