"""How the networks of a run are spread over the processes: one process, DDP or FSDP2 (docs/design.md §7).

Accelerate launches the processes and says which engine was asked for (`accelerate launch --multi_gpu`
for DDP; `--use_fsdp --fsdp_version 2`, or configs/accelerate_fsdp2.yaml, for FSDP2). DDP goes through
`accelerator.prepare`. FSDP2 is PyTorch's `fully_shard`, applied here: a unit per transformer block, and one unit per network for the rest of it
(the stage's loss module holds the student's; the fake score and the discriminator have their own, since the
student's loss reads them too). Every process keeps 1/N of each parameter, gradient, AdamW moment and EMA
entry; a block is gathered only while it runs, the rest of a network while its loss runs. Each gather is a
collective, so every process must call every block the same number of times: where a loss would skip a
call for lack of samples on this process (the finite difference without a sample with r < s, the negative
prompt's backbone when every sample dropped its prompt), it makes the call on a stand-in sample under
`draws.same_calls()` and discards it. The frozen teacher stays replicated (in its load dtype; bf16 for the
Wan presets); `tmd distill --plan --teacher-mode` shows what sharding it would save.
"""

from __future__ import annotations

import copy
import os

import torch

from ..errors import ConfigError

FSDP2_HINT = ("Launch FSDP2 with `accelerate launch --config_file configs/accelerate_fsdp2.yaml ...` "
              "(fsdp_version: 2), or DDP with `accelerate launch --multi_gpu --num_processes N ...`")


def check_launch_request(env=None) -> None:
    """Refuse, before accelerate builds anything, a launch that asked for an engine the loop does not run
    (accelerate's FSDP1 plugin, DeepSpeed): the error names the launch that works."""
    env = os.environ if env is None else env
    if env.get("ACCELERATE_USE_FSDP", "").lower() in ("true", "1") and env.get("FSDP_VERSION", "1") != "2":
        raise ConfigError(f"accelerate asked for FSDP version {env.get('FSDP_VERSION', '1')}; the loop shards with "
                          f"FSDP2 only: set fsdp_version: 2 in the accelerate config (or pass --fsdp_version 2). "
                          f"{FSDP2_HINT}")
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("true", "1"):
        raise ConfigError(f"accelerate asked for DeepSpeed, which the loop does not run: {FSDP2_HINT}")


def parallel_mode(acc, env=None) -> str:
    """"single", "ddp" or "fsdp2" from the accelerator and the launch environment; ConfigError for the rest."""
    from accelerate.utils import DistributedType

    env = os.environ if env is None else env
    kind = acc.distributed_type
    fsdp = kind == DistributedType.FSDP or env.get("ACCELERATE_USE_FSDP", "").lower() in ("true", "1")
    if fsdp:
        plugin = getattr(acc.state, "fsdp_plugin", None)
        version = str(getattr(plugin, "fsdp_version", None) or env.get("FSDP_VERSION", "1"))
        if version != "2":
            raise ConfigError(f"accelerate asked for FSDP version {version}; the loop shards with FSDP2 only: set "
                              f"fsdp_version: 2 in the accelerate config (or pass --fsdp_version 2). {FSDP2_HINT}")
        return "fsdp2" if acc.num_processes > 1 else "single"
    if kind in (DistributedType.NO,):
        return "single"
    if kind in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        return "ddp" if acc.num_processes > 1 else "single"
    raise ConfigError(f"accelerate launched this run as {kind}, which the loop does not support (DeepSpeed, XLA, "
                      f"Megatron): {FSDP2_HINT}")


def _vector_scalars(module: torch.nn.Module) -> None:
    """fully_shard refuses 0-d parameters (the gated fusion's α): hold them as Tensor[1] while sharded
    (the fusion reads α as Tensor[] or Tensor[1]); `full_state_dict` gives them their shape back."""
    for mod in module.modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            if p.dim() == 0:
                setattr(mod, name, torch.nn.Parameter(p.detach().reshape(1), requires_grad=p.requires_grad))


def transformer_blocks(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The Wan transformer blocks inside `module` (every `blocks` ModuleList): FSDP2's per-block units."""
    found = []
    for m in module.modules():
        blocks = getattr(m, "blocks", None)
        if isinstance(blocks, torch.nn.ModuleList):
            found.extend(blocks)
    return found


def shard(module: torch.nn.Module, acc) -> torch.nn.Module:
    """FSDP2 units: one per transformer block inside `module`, then `module` itself for the rest
    (embeddings, fusion, output layer), in place; returns it."""
    from torch.distributed.fsdp import fully_shard

    _vector_scalars(module)
    for block in transformer_blocks(module):
        fully_shard(block)
    fully_shard(module)
    return module


def wrap_loss(loss_module: torch.nn.Module, acc, mode: str, units=None) -> torch.nn.Module:
    """The stage's loss module ready to train: DDP through accelerator.prepare, or FSDP2 units, by default
    the loss module itself (`units`: the networks to shard one by one instead, e.g. the critics, which the
    student's loss reads too)."""
    if mode == "fsdp2":
        for m in units if units is not None else (loss_module,):
            if m is not None:
                shard(m, acc)
        return loss_module
    return acc.prepare(loss_module)


def meta_template(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module` on the meta device (no memory): the shape of the full network, kept before
    sharding so that rank 0 can rebuild the whole student from the gathered weights."""
    memo = {}
    for t in [*module.parameters(), *module.buffers()]:
        empty = torch.empty_like(t, device="meta")
        memo[id(t)] = torch.nn.Parameter(empty, requires_grad=t.requires_grad) if isinstance(
            t, torch.nn.Parameter) else empty
    return copy.deepcopy(module, memo)


def full_tensors(tensors: dict, like: dict | None = None) -> dict:
    """DTensors gathered whole (a collective: every process calls it, same order), on the CPU; 0-d
    parameters given back their shape from `like` (name -> tensor of the full network)."""
    out = {}
    for k, v in tensors.items():
        if hasattr(v, "full_tensor"):
            v = v.full_tensor()
        v = v.detach().cpu()
        if like is not None and k in like and tuple(like[k].shape) != tuple(v.shape):
            v = v.reshape(like[k].shape)
        out[k] = v
    return out


def rebuild_full(template: torch.nn.Module, state: dict) -> torch.nn.Module:
    """The whole network from its meta template and a full state dict (CPU), with Wan's rotary tables."""
    from ..wan_build import rebuild_rope

    full = copy.deepcopy(template).to_empty(device="cpu")
    full.load_state_dict(state, strict=True)
    tr = getattr(full, "transformer", full)
    rebuild_rope(tr)
    return full.eval()
