"""Run bookkeeping: the JSON-lines log, per-process seeds, memory readings and the one-line summaries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text

STAGE_ORDER = {"stage1": 0, "stage2": 1}


def derive_seed(seed: int, *parts) -> int:
    """An independent 63-bit seed for each (stage, purpose, rank) from the run's one seed."""
    digest = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class JsonlLog:
    """Append-only JSON lines (one record per logging step/event), written by the main process."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()

    def truncate(self, stage: str, step: int) -> None:
        """Keep only records up to `step` of `stage` (a killed run may have logged past its last state)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:  # a line cut by the kill
                continue
            order = STAGE_ORDER.get(r.get("stage"), -1)
            if order < STAGE_ORDER[stage] or (order == STAGE_ORDER[stage] and r.get("step", 0) <= step):
                if not (r.get("stage") == stage and r.get("step", 0) == step and r.get("event") == "stopped"):
                    keep.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def reduce_logs(logs: dict, accelerator) -> dict:
    """Scalar logs averaged over processes, as Python floats (same keys on every process)."""
    keys = sorted(k for k, v in logs.items() if isinstance(v, (int, float, torch.Tensor)))
    values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64)
    if accelerator.num_processes > 1 and keys:
        values = values.to(accelerator.device)
        torch.distributed.all_reduce(values)
        values = values.cpu() / accelerator.num_processes
    return {k: float(v) for k, v in zip(keys, values)}


def memory_mb(device) -> float:
    """Peak memory in MiB: CUDA allocator peak on a GPU, else the process's peak RSS."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except ImportError:  # Windows
        return float("nan")


def summary_line(stage: str, step: int, total: int, values: dict, rate: float, mem_mb: float) -> str:
    """`stage1 12/3000 | loss 0.4123 mse 1.02 | 1.85 it/s | mem 2048 MiB`."""
    shown = [k for k in values if "loss" in k] or list(values)[:4]
    losses = " ".join(f"{k} {values[k]:.4g}" for k in shown)
    return f"{stage} {step}/{total} | {losses} | {rate:.3g} it/s | mem {mem_mb:.0f} MiB"


def loss_line(record: dict | None, total: int | None = None) -> str:
    """`stage2 40/4000 | loss_student 0.41 loss_fake 0.12` from a training log record."""
    if not record:
        return "no training step logged"
    losses = " ".join(f"{k} {v:.4g}" for k, v in record.items() if "loss" in k and isinstance(v, (int, float)))
    step = f"{record.get('step', '?')}/{total}" if total else f"step {record.get('step', '?')}"
    return f"{record.get('stage', '?')} {step} | {losses}"
