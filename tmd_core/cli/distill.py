"""`tmd distill`: run stage 1, stage 2 or both from a preset + YAML overrides (EDM-style: --dry-run, --resume).

Many processes: `accelerate launch --multi_gpu --num_processes N -m tmd_core distill ...` (on a machine
without GPUs this forms a gloo group on the CPU; accelerate's `--cpu` launcher needs MPI for N > 1),
or `torchrun --nproc_per_node N -m tmd_core distill ...`; FSDP2: `accelerate launch --config_file
configs/accelerate_fsdp2.yaml --num_processes N -m tmd_core distill ...` (README: Training on many processes).
`--plan` prints the memory plan (training/memory_plan.py) and exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from ..errors import ConfigError
from ..training.config import PRESETS


def register(sub) -> None:
    p = sub.add_parser(
        "distill", help="distill a TMD student from a Wan teacher (stage 1, stage 2 or both)",
        description="Settings: a preset, then --config YAML, then the flags below, then --set KEY=VALUE "
        "(dotted keys, YAML values, e.g. --set stage1.lr=1e-5). Unknown keys are an error. Re-run the same "
        "command with --resume to continue a stopped or killed run exactly.",
    )
    p.add_argument("--preset", default="wan21_1p3b", help=" | ".join(PRESETS))
    p.add_argument("--config", help="YAML file overriding known fields of the preset")
    p.add_argument("--teacher", help="teacher checkpoint (sets model.teacher)")
    p.add_argument("--data", help="data folder from `tmd make-data` (sets data)")
    p.add_argument("--output-dir", help="run folder (sets output_dir)")
    p.add_argument("--stages", help="stage1, stage2 or stage1,stage2 (sets stages)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one field (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last state")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config, run every check the real run "
                   "makes before loading anything (settings, teacher and data headers, output_dir), and exit")
    g = p.add_argument_group("memory plan (--plan: print bytes per process and exit; nothing is loaded)")
    g.add_argument("--plan", action="store_true", help="print the per-process bytes of weights, gradients, optimiser "
                   "state and EMA of every network, and whether they fit --gpu-mem")
    g.add_argument("--processes", type=int, default=None, help="process count (default: WORLD_SIZE or 1)")
    g.add_argument("--sharding", default="sharded", help="sharded (FSDP2, the default) | full (one process or DDP)")
    g.add_argument("--master-dtype", default=None, help="bf16 | fp32: trained weights and gradients (default: the "
                   "config's master_dtype; AdamW's moments are fp32 either way)")
    g.add_argument("--teacher-placement", "--teacher-mode", dest="teacher_placement", default=None,
                   help="shard | replicate (default: the config's teacher_placement)")
    g.add_argument("--teacher-dtype", default=None, help="bf16 | fp32 (default: the config's teacher_dtype; auto = bf16)")
    g.add_argument("--gpu-mem", help="memory of one GPU, e.g. 80GB: say whether the plan fits")
    p.set_defaults(func=run)


def resolve_config(args):
    """Preset -> YAML -> flags -> --set, every step checked against the known fields."""
    import yaml

    from ..training.config import apply_overrides, load_config

    cfg = load_config(args.preset, args.config)
    flags = {"model": {"teacher": args.teacher}, "data": args.data, "output_dir": args.output_dir,
             "stages": args.stages.split(",") if args.stages else None}
    flags["model"] = {k: v for k, v in flags["model"].items() if v is not None}
    apply_overrides(cfg, {k: v for k, v in flags.items() if v not in (None, {})}, where="flags")
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        nested: dict = {}
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if not all(parts):
            raise ConfigError(f"--set {item!r}: the key must be dotted field names, e.g. stage1.lr=1e-5")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]}): quote it, "
                              "e.g. --set name='\"my run\"'") from e
        apply_overrides(cfg, nested, where="--set")
    return cfg


@contextlib.contextmanager
def graceful_stop():
    """Ctrl-C / SIGTERM ask the training loop to stop after its current step (with a resumable state); a
    second Ctrl-C aborts. Yields `should_stop()`."""
    stop = {"flag": False}

    def request_stop(signum, frame):
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        print("stopping after this step (saving state); press Ctrl-C again to abort", file=sys.stderr)

    old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: stop["flag"]
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def plan_text(args, cfg) -> str:
    """`--plan`: the memory plan of the run's networks (architecture from --teacher's header, else the preset)."""
    from ..training.config import teacher_config
    from ..training.memory_plan import (
        format_plan,
        memory_plan,
        parse_bytes,
        preset_architecture,
        settings_for,
    )

    tcfg = teacher_config(cfg) if cfg.model.teacher else preset_architecture(args.preset)
    settings = settings_for(  # the config's master_dtype, teacher_placement and teacher_dtype, then the flags
        cfg, processes=args.processes if args.processes is not None else _world_size(), sharding=args.sharding,
        gpu_mem=parse_bytes(args.gpu_mem) if args.gpu_mem else None, master_dtype=args.master_dtype,
        teacher=args.teacher_placement, teacher_dtype=args.teacher_dtype)
    what = cfg.model.teacher or f"preset {args.preset}"
    return format_plan(memory_plan(cfg, tcfg, settings), f"{what}, stages {', '.join(cfg.stages)}")


def run(args) -> int:
    from ..training.config import check_run, to_yaml

    cfg = resolve_config(args)
    if args.plan:
        print(plan_text(args, cfg))
        return 0
    if args.dry_run:  # exactly the checks run_distill makes before it loads anything
        print(to_yaml(cfg), end="")
        check_run(cfg, _world_size(), resume=args.resume)
        print(f"# config ok for {_world_size()} process(es): teacher, data and output_dir checked")
        return 0
    from ..training.loop import run_distill

    with graceful_stop() as stop:
        path = run_distill(cfg, should_stop=stop, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":
        return 0
    if stop():
        print(f"stopped: partial student {path}; continue with the same command plus --resume")
        return 0
    print(f"distill: wrote {path}")
    return 0
