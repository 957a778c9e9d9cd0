"""How the networks of a run are spread over the processes: one process, DDP or FSDP2 (docs/design.md §7).

Accelerate launches the processes and says which engine was asked for (`accelerate launch --multi_gpu`
for DDP; configs/accelerate_fsdp2.yaml for FSDP2: `fsdp_version: 2`, `TRANSFORMER_BASED_WRAP` of
`WanTransformerBlock`). DDP goes through `accelerator.prepare`. FSDP2 is PyTorch's `fully_shard`, applied
here: a unit per transformer block, and one unit per network for the rest of it (the stage's loss module
holds the student's; the fake score and the discriminator have their own, since the student's loss reads
them too) -- the units accelerate's wrap policy names. Not through `accelerator.prepare`: accelerate 1.16
builds no FSDP plugin on the CPU (its FSDP branch is GPU-only: `Accelerator(cpu=True)` reports MULTI_CPU and
`prepare` returns DDP), so that path could not be tested where the tests run; its transformer policy also
raises for the discriminator (no transformer block), and it always adds a root unit, which the teacher
cannot have. The launch's FSDP settings are checked all the same (`check_fsdp2_plugin`).

Every process keeps 1/N of each parameter, gradient, AdamW moment and EMA entry; a block is gathered only
while it runs, the rest of a network while its loss runs. Each gather is a collective, so every process must
call every block the same number of times: where a loss would skip a call for lack of samples on this
process (the finite difference without a sample with r < s, the negative prompt's backbone when every
sample dropped its prompt), it makes the call on a stand-in sample under `draws.same_calls()` and discards it.

The frozen teacher (`teacher_placement`): replicated on every process in `teacher_dtype`, or under FSDP2
sharded by `shard_frozen`: one unit per block and per embedding module, each resharded after its forward and
gathered again for the backward the GAN term makes through it; no gradients, no optimiser, no root unit (the
GAN features call the embeddings and blocks outside the teacher's `forward`, where a root unit's parameters
would never be gathered; and torch keeps a root unit gathered after its forward).
"""

from __future__ import annotations

import copy
import os

import torch

from ..errors import ConfigError

FSDP2_HINT = ("Launch FSDP2 with `accelerate launch --config_file configs/accelerate_fsdp2.yaml ...` "
              "(fsdp_version: 2), or DDP with `accelerate launch --multi_gpu --num_processes N ...`")
BLOCK_CLASS = "WanTransformerBlock"  # FSDP2's unit: accelerate's TRANSFORMER_BASED_WRAP of this class


def _on(value) -> bool:
    return str(value).lower() in ("true", "1", "yes")


def check_launch_request(env=None, cfg=None) -> None:
    """Refuse, before accelerate builds anything, a launch that asked for something the loop does not run
    (accelerate's FSDP1 plugin, DeepSpeed, a launch precision other than the run's): the error names the fix."""
    env = os.environ if env is None else env
    if _on(env.get("ACCELERATE_USE_FSDP", "")) and env.get("FSDP_VERSION", "1") != "2":
        raise ConfigError(f"accelerate asked for FSDP version {env.get('FSDP_VERSION', '1')}; the loop shards with "
                          f"FSDP2 only: set fsdp_version: 2 in the accelerate config (or pass --fsdp_version 2). "
                          f"{FSDP2_HINT}")
    if _on(env.get("ACCELERATE_USE_DEEPSPEED", "")):
        raise ConfigError(f"accelerate asked for DeepSpeed, which the loop does not run: {FSDP2_HINT}")
    asked = env.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if cfg is not None and asked not in ("no", cfg.mixed_precision):
        raise ConfigError(f"accelerate launch asked for mixed precision {asked!r}, the run config says "
                          f"{cfg.mixed_precision!r}: the run's precision is its config's (accelerate's is not read): "
                          f"set mixed_precision: {'bf16' if asked == 'bf16' else 'no'} in the run config (--set "
                          f"mixed_precision=...) and launch with --mixed_precision no (fp16 and fp8 are not supported)")


def fsdp2_plugin_from_env(env=None):
    """The FSDP settings of the launch, from the FSDP_* variables `accelerate launch` sets (what accelerate's
    own plugin reads; on the CPU accelerate builds no plugin)."""
    from types import SimpleNamespace

    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy, transformer_auto_wrap_policy

    env = os.environ if env is None else env
    policy = {"TRANSFORMER_BASED_WRAP": transformer_auto_wrap_policy,
              "SIZE_BASED_WRAP": size_based_auto_wrap_policy}.get(env.get("FSDP_AUTO_WRAP_POLICY", "NO_WRAP").upper())
    names = env.get("FSDP_TRANSFORMER_CLS_TO_WRAP")
    return SimpleNamespace(auto_wrap_policy=policy, transformer_cls_names_to_wrap=names.split(",") if names else None,
                           cpu_offload=_on(env.get("FSDP_OFFLOAD_PARAMS", "")),
                           activation_checkpointing=_on(env.get("FSDP_ACTIVATION_CHECKPOINTING", "")),
                           cpu_ram_efficient_loading=_on(env.get("FSDP_CPU_RAM_EFFICIENT_LOADING", "")))


def check_fsdp2_plugin(plugin) -> None:
    """The FSDP2 settings of the launch that the loop runs: per-block units of WanTransformerBlock, nothing
    offloaded or checkpointed by accelerate, no rank-0-only loading. ConfigError naming the fix otherwise."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    fix = f"use configs/accelerate_fsdp2.yaml, or set it in your accelerate config; {FSDP2_HINT}"
    policy = getattr(plugin, "auto_wrap_policy", None)
    policy = getattr(policy, "func", policy)  # accelerate turns it into a functools.partial on first use
    names = list(getattr(plugin, "transformer_cls_names_to_wrap", None) or [])
    # unset (NO_WRAP, accelerate's default) is accepted: the units are the loop's own, one per block
    if policy is not None and (policy is not transformer_auto_wrap_policy or names != [BLOCK_CLASS]):
        what = f"auto-wrap policy {getattr(policy, '__name__', policy)} with classes {names or 'unset'}"
        raise ConfigError(f"the FSDP2 launch has {what}; the loop shards one unit per transformer block: set "
                          f"fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP and fsdp_transformer_layer_cls_to_wrap: "
                          f"{BLOCK_CLASS} ({fix})")
    offload = getattr(plugin, "cpu_offload", None)
    if offload and type(offload).__name__ != "OffloadPolicy":  # FSDP2's no-offload policy is OffloadPolicy()
        raise ConfigError(f"the FSDP2 launch asks to offload parameters to the CPU, which the loop does not run: set "
                          f"fsdp_offload_params: false ({fix})")
    if getattr(plugin, "activation_checkpointing", False):
        raise ConfigError("the FSDP2 launch asks accelerate for activation checkpointing, which wraps the blocks the "
                          "losses call directly: set fsdp_activation_checkpointing: false and use the run's own "
                          f"gradient_checkpointing: true ({fix})")
    if getattr(plugin, "cpu_ram_efficient_loading", False):
        raise ConfigError("the FSDP2 launch asks for cpu_ram_efficient_loading (rank 0 loads, the others wait on the "
                          "meta device), which the loop does not run: every process loads the teacher; set "
                          f"fsdp_cpu_ram_efficient_loading: false ({fix})")


def check_placement(cfg, mode: str) -> None:
    """`teacher_placement: shard` needs FSDP2 (one process has nothing to shard and keeps the teacher whole)."""
    if getattr(cfg.model, "mode", "full") == "lora" and mode == "fsdp2":
        raise ConfigError("model.mode lora shares one copy of the teacher's weights between teacher, student and fake "
                          "score, which FSDP2 cannot shard per network: launch with DDP (`accelerate launch "
                          "--multi_gpu --num_processes N ...`) or one process, or set model.mode full")
    if cfg.teacher_placement == "shard" and mode == "ddp":
        raise ConfigError("teacher_placement: shard needs an FSDP2 launch, this one is DDP (every process holds "
                          "every network): launch with `accelerate launch --config_file configs/accelerate_fsdp2.yaml "
                          "...`, or set teacher_placement: replicate (--set teacher_placement=replicate)")


def parallel_mode(acc, env=None) -> str:
    """"single", "ddp" or "fsdp2" from the accelerator and the launch environment; ConfigError for the rest."""
    from accelerate.utils import DistributedType

    env = os.environ if env is None else env
    kind = acc.distributed_type
    fsdp = kind == DistributedType.FSDP or env.get("ACCELERATE_USE_FSDP", "").lower() in ("true", "1")
    if fsdp:
        plugin = getattr(acc.state, "fsdp_plugin", None)  # absent on the CPU (see the module docstring)
        version = str(getattr(plugin, "fsdp_version", None) or env.get("FSDP_VERSION", "1"))
        if version != "2":
            raise ConfigError(f"accelerate asked for FSDP version {version}; the loop shards with FSDP2 only: set "
                              f"fsdp_version: 2 in the accelerate config (or pass --fsdp_version 2). {FSDP2_HINT}")
        if acc.num_processes == 1:
            return "single"
        check_fsdp2_plugin(plugin if plugin is not None else fsdp2_plugin_from_env(env))  # GPU: accelerate's plugin
        return "fsdp2"
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


def shard(module: torch.nn.Module, acc, master_dtype: str = "fp32") -> torch.nn.Module:
    """FSDP2 units of a trained network, in place: one per transformer block inside `module`, then `module`
    itself for the rest (embeddings, fusion, output layer). bf16 master weights reduce their gradients in
    fp32 (MixedPrecisionPolicy(reduce_dtype=fp32)); the gathered weights are the master dtype. Returns it."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    _vector_scalars(module)
    policy = MixedPrecisionPolicy(reduce_dtype=torch.float32) if master_dtype == "bf16" else MixedPrecisionPolicy()
    for block in transformer_blocks(module):
        fully_shard(block, mp_policy=policy)
    fully_shard(module, mp_policy=policy)
    return module


def shard_frozen(module: torch.nn.Module) -> torch.nn.Module:
    """The frozen teacher sharded (`teacher_placement: shard`), in place: one FSDP2 unit per transformer block
    and one per child module holding parameters (patch embedding, text/time embedder, output projection), each
    resharded after its forward (gathered again in the backward the GAN term makes through it). Parameters held
    by the network itself (Wan's `scale_shift_table`, 2 x width values) stay whole on every process. No root
    unit: the GAN features call the embeddings and blocks outside the network's `forward` (module docstring)."""
    from torch.distributed.fsdp import fully_shard

    _vector_scalars(module)
    blocks = set(transformer_blocks(module))
    for block in blocks:
        fully_shard(block, reshard_after_forward=True)
    for child in module.children():
        if isinstance(child, torch.nn.ModuleList) and any(b in blocks for b in child):
            continue
        if any(True for _ in child.parameters()):
            fully_shard(child, reshard_after_forward=True)
    return module


def wrap_loss(loss_module: torch.nn.Module, acc, mode: str, units=None, master_dtype: str = "fp32") -> torch.nn.Module:
    """The stage's loss module ready to train: DDP through accelerator.prepare, or FSDP2 units (`shard`), by
    default the loss module itself (`units`: the networks to shard one by one instead, e.g. the critics, which
    the student's loss reads too)."""
    if mode == "fsdp2":
        for m in units if units is not None else (loss_module,):
            if m is not None:
                shard(m, acc, master_dtype)
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
