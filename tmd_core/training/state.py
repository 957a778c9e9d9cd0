"""Resumable training state: one safetensors file per stage, written atomically, never pickled.

Tensors: `model.<name>.<param>` (student, fake score, discriminator), `ema.<param>`,
`optim.<name>.<param>.<key>` (optimiser moments and step counters) and `rng.<rank>.<which>`
(the CPU generator of every process's losses and torch's global RNG). Metadata (JSON strings):
`format`, `stage`, `step`, `world_size`, `data` (reader position), `optim` (param groups and
non-tensor state), `python_rng` per rank, and `config` (the resolved run config).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from safetensors import safe_open

from ..checkpoint import atomic_save_safetensors
from ..errors import CheckpointError, ConfigError
from ..loading import read_safetensors_header

FORMAT = "tmd-train-state/1"


class EMA:
    """Exponential moving average of a module's floating parameters, kept in float32."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {n: p.detach().float().clone() for n, p in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for n, p in module.named_parameters():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def swap(self, module: torch.nn.Module) -> None:
        """Exchange the module's parameters with the averages (call twice to restore)."""
        for n, p in module.named_parameters():
            tmp = p.detach().clone()
            p.copy_(self.shadow[n].to(p.dtype))
            self.shadow[n].copy_(tmp.float())


def rng_snapshot(generator: torch.Generator) -> dict:
    """This process's RNG states: the loss generator, torch's global CPU (and CUDA) RNG, Python's."""
    snap = {"gen": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        snap["cuda"] = torch.cuda.get_rng_state()
    snap["python"] = json.dumps(random.getstate())
    return snap


def rng_restore(snap: dict, generator: torch.Generator) -> None:
    generator.set_state(snap["gen"])
    torch.set_rng_state(snap["torch"])
    if "cuda" in snap and torch.cuda.is_available():
        torch.cuda.set_rng_state(snap["cuda"])
    if "python" in snap:
        v, state, gauss = json.loads(snap["python"])
        random.setstate((v, tuple(state), gauss))


def _optim_flatten(name: str, module: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Optimiser state keyed by parameter names (so it survives any param re-ordering)."""
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    sd = opt.state_dict()
    tensors, other = {}, {}
    for idx, st in sd["state"].items():
        for key, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{name}.{names[idx]}.{key}"] = v
            else:
                other.setdefault(names[idx], {})[key] = v
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [names[i] for i in g["params"]]}
              for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "other": other}


def _optim_restore(name: str, module, opt, tensors: dict, meta: dict) -> None:
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    pos = {n: i for i, n in enumerate(names)}
    state: dict[int, dict] = {}
    prefix = f"optim.{name}."
    for k, v in tensors.items():
        if k.startswith(prefix):
            pname, key = k[len(prefix):].rsplit(".", 1)
            if pname not in pos:
                raise CheckpointError(f"training state has optimiser entries for {pname!r}, which the model lacks")
            state.setdefault(pos[pname], {})[key] = v
    for pname, extra in meta.get("other", {}).items():
        state.setdefault(pos[pname], {}).update(extra)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        g["params"] = [pos[n] for n in g["params"]]
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_state(path, *, stage: str, step: int, models: dict, optimizers: dict, ema: EMA | None,
               data_state: dict, rng_states: list[dict], config: dict, extra: dict | None = None) -> Path:
    """Write the whole training state of one stage (call on the main process only).

    Args:
        models: name -> module (full, unsharded state dicts are saved).
        optimizers: name -> (module, optimizer) with the optimizer over the module's trainable params.
        rng_states: one `rng_snapshot` per process, in rank order.
    """
    tensors, optim_meta = {}, {}
    for name, module in models.items():
        for k, v in module.state_dict().items():
            tensors[f"model.{name}.{k}"] = v
    for name, (module, opt) in optimizers.items():
        t, m = _optim_flatten(name, module, opt)
        tensors.update(t)
        optim_meta[name] = m
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.shadow.items()})
    python_rng = []
    for rank, snap in enumerate(rng_states):
        for which, v in snap.items():
            if which == "python":
                python_rng.append(v)
            else:
                tensors[f"rng.{rank}.{which}"] = v
    metadata = {
        "format": FORMAT, "stage": stage, "step": str(step), "world_size": str(len(rng_states)),
        "data": json.dumps(data_state), "optim": json.dumps(optim_meta, default=float),
        "python_rng": json.dumps(python_rng), "config": json.dumps(config, default=str),
        "extra": json.dumps(extra or {}, default=str),
    }
    atomic_save_safetensors(tensors, path, metadata)
    return Path(path)


def read_state_header(path) -> dict:
    """The metadata of a training state file (cheap: no tensors are read)."""
    try:
        meta = read_safetensors_header(path)[1]
    except CheckpointError as e:
        raise CheckpointError(f"training state {path} is unreadable ({e.__cause__}); delete it to restart the stage") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a training state (format {meta.get('format')!r}, expected {FORMAT!r})")
    return meta


def load_state(path, *, rank: int, world_size: int, models: dict, optimizers: dict, ema: EMA | None,
               generator: torch.Generator) -> dict:
    """Restore models, optimisers, EMA and this process's RNG from `save_state`'s file.

    Returns:
        {"step", "data", "extra"} for the loop to restore its counters and reader position.
    """
    meta = read_state_header(path)
    saved_world = int(meta["world_size"])
    if saved_world != world_size:
        raise ConfigError(
            f"{path} was written by {saved_world} processes, this run has {world_size}: resume with the "
            "same number of processes (the data split and every process's random stream depend on it)"
        )
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    for name, module in models.items():
        prefix = f"model.{name}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"training state {path}: {name} does not fit this run's model ({e})") from e
    optim_meta = json.loads(meta["optim"])
    for name, (module, opt) in optimizers.items():
        _optim_restore(name, module, opt, tensors, optim_meta[name])
    if ema is not None:
        for k in ema.shadow:
            ema.shadow[k].copy_(tensors[f"ema.{k}"])
    snap = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"rng.{rank}.")}
    python_rng = json.loads(meta.get("python_rng", "[]"))
    if rank < len(python_rng):
        snap["python"] = python_rng[rank]
    rng_restore(snap, generator)
    return {"step": int(meta["step"]), "data": json.loads(meta["data"]), "extra": json.loads(meta["extra"]),
            "config": json.loads(meta["config"])}
