"""Resumable training state: one safetensors file per stage, written atomically, never pickled.

Tensors: `model.<name>.<param>` (student, fake score, discriminator; in LoRA mode only the parameters they
train, not the base weights they share with the teacher), `ema.<param>`,
`optim.<name>.<param>.<key>` (optimiser moments and step counters) and `rng.<rank>.<which>`
(the CPU generator of every process's losses and torch's global RNG). Metadata (JSON strings):
`format`, `stage`, `step`, `world_size`, `data` (reader position), `optim` (param groups and
non-tensor state), `python_rng` per rank, and `config` (the resolved run config).
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import torch
from safetensors import safe_open

from ..checkpoint import atomic_save_safetensors
from ..errors import CheckpointError, ConfigError
from ..loading import read_safetensors_header
from ..lora import load_trained_state, trained_state_dict

FORMAT = "tmd-train-state/1"


def _trained(module: torch.nn.Module):
    """(name, parameter) of the parameters that train: all of a full-mode network, the LoRA factors, fusion
    layer and gap embedding of a LoRA-mode one (its frozen base is the teacher's and never changes)."""
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


class EMA:
    """Exponential moving average of a module's trained parameters, kept in float32."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {n: p.detach().float().clone() for n, p in _trained(module)}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for n, p in _trained(module):
            self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped(self, module: torch.nn.Module):
        """The module with the averages in place of its parameters for the duration of the block."""
        self.swap(module)
        try:
            yield module
        finally:
            self.swap(module)

    @torch.no_grad()
    def swap(self, module: torch.nn.Module) -> None:
        """Exchange the module's parameters with the averages (call twice to restore)."""
        for n, p in _trained(module):
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


def _local(t):
    """A DTensor's shard on this process (FSDP2), any other tensor as it is."""
    return t.to_local() if hasattr(t, "to_local") else t


def shard_path(path, rank: int, step: int) -> Path:
    """The file of rank `rank`'s shards (FSDP2) saved at `step`, beside rank 0's `state-<stage>.safetensors`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}.step{step}.safetensors")


def remove_old_shards(path, rank: int, keep_step: int) -> None:
    """Delete rank `rank`'s shard files other than `keep_step`'s (after rank 0's file names that step)."""
    path = Path(path)
    for old in path.parent.glob(f"{path.stem}.rank{rank}.step*.safetensors"):
        if old != shard_path(path, rank, keep_step):
            old.unlink(missing_ok=True)


def _optim_flatten(name: str, module: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Optimiser state keyed by parameter names (so it survives any param re-ordering)."""
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    sd = opt.state_dict()
    tensors, other = {}, {}
    for idx, st in sd["state"].items():
        for key, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{name}.{names[idx]}.{key}"] = _local(v)
            else:
                other.setdefault(names[idx], {})[key] = v
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [names[i] for i in g["params"]]}
              for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "other": other}


def _optim_restore(name: str, module, opt, tensors: dict, meta: dict) -> None:
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    pos = {n: i for i, n in enumerate(names)}
    state: dict[int, dict] = {}
    prefix = f"optim.{name}."
    for k, v in tensors.items():
        if k.startswith(prefix):
            pname, key = k[len(prefix):].rsplit(".", 1)
            if pname not in pos:
                raise CheckpointError(f"training state has optimiser entries for {pname!r}, which the model lacks")
            p = named[pos[pname]][1]
            if hasattr(p, "device_mesh") and v.dim() > 0:  # FSDP2: this process's shard of a moment
                from torch.distributed.tensor import DTensor

                v = DTensor.from_local(v, p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
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
        for k, v in trained_state_dict(module).items():  # LoRA mode: not the shared base (the teacher's)
            tensors[f"model.{name}.{k}"] = _local(v.detach())
    for name, (module, opt) in optimizers.items():
        t, m = _optim_flatten(name, module, opt)
        tensors.update(t)
        optim_meta[name] = m
    if ema is not None:
        tensors.update({f"ema.{k}": _local(v) for k, v in ema.shadow.items()})
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
               generator: torch.Generator, sharded: bool = False) -> dict:
    """Restore models, optimisers, EMA and this process's RNG from `save_state`'s file.

    Returns:
        {"step", "data", "extra"} for the loop to restore its counters and reader position.
    """
    meta = read_state_header(path)
    saved_world = int(meta["world_size"])
    saved_mode = json.loads(meta.get("extra", "{}")).get("parallel", "single")
    # A replicated state (one process or DDP) holds the whole networks, and the random streams and the data
    # position do not depend on the process count (draws.py, ShardReader): it resumes on any count. A
    # sharded one holds 1/N of them per file and resumes only as it was saved.
    if (saved_mode == "fsdp2" or sharded) and (saved_world != world_size or (saved_mode == "fsdp2") != sharded):
        how = f"as {saved_world} FSDP2 shards" if saved_mode == "fsdp2" else f"by {saved_world} process(es), unsharded"
        now = f"{world_size} process(es){' with FSDP2' if sharded else ''}"
        raise ConfigError(
            f"{path} was saved {how}, this run has {now}: resume with the launch that saved it (the same "
            "--num_processes and accelerate config); resharding a run onto another process count is not supported"
        )
    source = shard_path(path, rank, int(meta["step"])) if sharded and rank > 0 else path
    if not Path(source).is_file():
        raise CheckpointError(f"training state {path} names step {meta['step']}, but rank {rank}'s shards "
                              f"{Path(source).name} are missing: restore that file, or delete {Path(path).name} "
                              "to restart the stage")
    with safe_open(str(source), framework="pt") as f:
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    for name, module in models.items():
        prefix = f"model.{name}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            _load_module(module, sd)
        except RuntimeError as e:
            raise CheckpointError(f"training state {path}: {name} does not fit this run's model ({e})") from e
    optim_meta = json.loads(meta["optim"])
    for name, (module, opt) in optimizers.items():
        _optim_restore(name, module, opt, tensors, optim_meta[name])
    if ema is not None:
        for k in ema.shadow:
            _local(ema.shadow[k]).copy_(tensors[f"ema.{k}"])
    src = rank if rank < saved_world else 0  # every process's loss generator is the same (draws.py)
    snap = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"rng.{src}.")}
    python_rng = json.loads(meta.get("python_rng", "[]"))
    if src < len(python_rng):
        snap["python"] = python_rng[src]
    rng_restore(snap, generator)
    return {"step": int(meta["step"]), "data": json.loads(meta["data"]), "extra": json.loads(meta["extra"]),
            "config": json.loads(meta["config"])}


@torch.no_grad()
def _load_module(module: torch.nn.Module, sd: dict) -> None:
    """load_state_dict(strict) for a plain module; for an FSDP2 one, each saved shard copied into place."""
    own = module.state_dict()
    if not any(hasattr(v, "to_local") for v in own.values()):
        load_trained_state(module, sd)
        return
    if own.keys() != sd.keys():
        raise RuntimeError(f"keys differ: missing {sorted(own.keys() - sd.keys())[:4]}, "
                           f"unexpected {sorted(sd.keys() - own.keys())[:4]}")
    for k, v in own.items():
        local = _local(v)
        if tuple(local.shape) != tuple(sd[k].shape):
            raise RuntimeError(f"{k}: saved shard {tuple(sd[k].shape)}, this process holds {tuple(local.shape)}")
        local.copy_(sd[k])
