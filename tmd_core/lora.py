"""LoRA mode: student and fake score as LoRAs (peft) on one shared copy of the teacher's weights (docs/design.md §7).

Three networks read the same base weights: the frozen teacher; the student = base + the "student" LoRA + its own
fusion layer and gap embedding (docs/method.md §2.2, App. A.1); the fake score = base + the "fake" LoRA
(docs/method.md §5). Each is its own module tree: `shared_view` copies the teacher's *structure* (every container
module) but keeps the very same `nn.Parameter` and buffer objects, then diffusers' adapter support
(`add_adapter(LoraConfig(...))`, peft underneath) wraps that view's target linears. No adapter is ever switched on
or off: the teacher's tree has none, the student's only its own. So the active adapter is never global state that
a gradient-checkpointing recompute (run during the backward, possibly of another network's loss) could read
wrongly, and DDP sees in each loss module exactly the LoRA it trains.

At initialisation peft's B is zero, so every view equals the teacher and the TMD student keeps the decoupling
invariant `head(fuse(B(x_t, t), y_s, s = t), s = t, r) == teacher(x_t, t)` (docs/method.md §2.3).

A LoRA-mode student is written as a TMD patch directly (`patch_from_lora`, docs/patches.md): the factors as
trained, no SVD, ΔW = (alpha / r) B A folded into the patch's convention ΔW = B' A with B' = (alpha / r) B.
"""

from __future__ import annotations

import collections
import copy
import re

import torch
from torch import nn

from .errors import CheckpointError, ConfigError

# Target groups: the linear layers of every block LoRA mode adapts (diffusers names inside `blocks.<i>.`).
# All of a block's matrices: self-attention q/k/v/o, cross-attention q/k/v/o (the text K/V too: what the
# student attends to in the prompt changes with its task), the FFN's two linears (2/3 of a block's weights).
# Outside the blocks everything stays the teacher's (patch/text/time embeddings, modulation tables, norms,
# output projection): the student's own modules there are the fusion layer and the gap embedding, trained whole.
LORA_TARGETS = {
    "self_attn": r"attn1\.(to_q|to_k|to_v|to_out\.0)",
    "cross_attn": r"attn2\.(to_q|to_k|to_v|to_out\.0)",
    "ffn": r"ffn\.net\.(0\.proj|2)",
}
STUDENT_ADAPTER, FAKE_ADAPTER = "student", "fake"


def target_regex(targets) -> str:
    """peft's `target_modules` (a full-match regex over module names) for the target groups `targets`."""
    targets = tuple(targets)
    bad = [t for t in targets if t not in LORA_TARGETS]
    if not targets or bad:
        raise ConfigError(f"model.lora_targets must be a non-empty list of {sorted(LORA_TARGETS)}, got {list(targets)}")
    return rf"blocks\.\d+\.({'|'.join(LORA_TARGETS[t] for t in targets)})"


def check_lora_settings(rank, alpha, targets) -> None:
    """ConfigError for a rank below 1, a non-positive alpha, or unknown target groups."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"model.lora_rank must be an integer of 1 or more (e.g. 64), got {rank!r}")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0
                              or alpha == float("inf")):
        raise ConfigError(f"model.lora_alpha must be a positive number (or null: alpha = rank, scale 1), got {alpha!r}")
    target_regex(targets)


def shared_view(module: nn.Module) -> nn.Module:
    """A new module tree with `module`'s structure whose parameters and buffers ARE `module`'s (same objects).

    Adding adapters to the view replaces submodules in the view only; the original tree is left as it is.
    Attributes that are not modules, parameters or buffers (configs, flags) are copied shallowly, so e.g.
    `enable_gradient_checkpointing` on one tree does not reach the other."""
    memo: dict[int, nn.Module] = {}

    def clone(m: nn.Module) -> nn.Module:
        if id(m) in memo:
            return memo[id(m)]
        c = copy.copy(m)  # a new __dict__ holding the same values
        memo[id(m)] = c
        c._parameters = collections.OrderedDict(m._parameters)
        c._buffers = collections.OrderedDict(m._buffers)
        c._modules = collections.OrderedDict((k, None if v is None else clone(v)) for k, v in m._modules.items())
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            if hasattr(m, hooks):
                setattr(c, hooks, collections.OrderedDict(getattr(m, hooks)))
        return c

    return clone(module)


def add_lora(transformer: nn.Module, adapter: str, rank: int, alpha: float | None, targets) -> nn.Module:
    """A view of `transformer` (shared base weights) with one LoRA adapter on the target linears of its blocks.

    Args:
        transformer: a diffusers WanTransformer3DModel (the frozen teacher).
        adapter: the adapter's name ("student", "fake").
        rank, alpha: LoRA rank r and alpha (None: alpha = r); peft's scale is alpha / r.
        targets: target groups of LORA_TARGETS.
    Returns:
        The view; only its LoRA factors require gradients (A: peft's Kaiming-uniform init from torch's global RNG,
        B: zeros, so the view equals the teacher).
    """
    check_lora_settings(rank, alpha, targets)
    try:
        from peft import LoraConfig
    except ImportError as e:
        raise ConfigError("model.mode lora needs peft: pip install peft (requirements.txt)") from e
    view = shared_view(transformer)
    config = LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha), lora_dropout=0.0,
                        init_lora_weights=True, target_modules=target_regex(targets))
    view.add_adapter(config, adapter_name=adapter)  # diffusers' adapter support (peft's inject_adapter_in_model)
    for name, p in view.named_parameters():
        p.requires_grad_(".lora_" in name)  # the base stays frozen: it is the teacher's
    return view


def is_lora(module: nn.Module) -> bool:
    """True for a LoRA-mode network (a view with adapters, or a TMDModel around one)."""
    transformer = getattr(module, "transformer", module)
    return bool(getattr(transformer, "peft_config", None))


def trained_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """What a training state holds of a network: everything in full mode; in LoRA mode only the parameters that
    train (LoRA factors, fusion, gap embedding), not the shared base, which is the teacher's."""
    if not is_lora(module):
        return module.state_dict()
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def load_trained_state(module: nn.Module, sd: dict) -> None:
    """Inverse of `trained_state_dict` (strict: every trained tensor present, nothing else)."""
    if not is_lora(module):
        module.load_state_dict(sd, strict=True)
        return
    own = dict(trained_state_dict(module))
    if own.keys() != sd.keys():
        raise RuntimeError(f"LoRA state keys differ: missing {sorted(own.keys() - sd.keys())[:4]}, unexpected "
                           f"{sorted(sd.keys() - own.keys())[:4]}")
    with torch.no_grad():
        for k, p in own.items():
            if tuple(p.shape) != tuple(sd[k].shape):
                raise RuntimeError(f"{k}: saved {tuple(sd[k].shape)}, the model has {tuple(p.shape)}")
            p.copy_(sd[k])


_FACTOR = re.compile(r"(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight")


def lora_factors(transformer: nn.Module, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The adapter's factors in the patch convention: diffusers weight key -> (A [r, in], B' [out, r]) with
    B' = (alpha / r) B, so ΔW = B' A (peft: ΔW = scale · B A). Float tensors detached from the graph."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, p in transformer.named_parameters():
        m = _FACTOR.fullmatch(name)
        if m and m["adapter"] == adapter:
            out.setdefault(m["module"], {})[m["ab"]] = p.detach()
    factors = {}
    for module, ab in out.items():
        layer = transformer.get_submodule(module)
        scale = float(layer.scaling[adapter])
        factors[f"{module}.weight"] = (ab["A"].clone(), (ab["B"].float() * scale).to(ab["B"].dtype))
    return factors


def patch_from_lora(student, base_config: dict, *, rank: int, dtype: torch.dtype | None = None,
                    provenance: dict | None = None):
    """A TMD patch (patch.Patch) from a LoRA-mode student: its LoRA factors as trained plus its fusion layer and
    gap embedding whole. Nothing else of the transformer changed, so the patch holds no whole differences.

    Args:
        student: a TMDModel whose transformer is a `add_lora(..., "student", ...)` view.
        base_config: the teacher's diffusers config.
        rank: the LoRA rank (recorded as the patch's rank).
        dtype: of the stored factors and fusion/gap tensors (default: as trained).
    """
    from .patch import EXTRA_PARTS, Patch

    factors = lora_factors(student.transformer, STUDENT_ADAPTER)
    if not factors:
        raise ConfigError("the student has no 'student' LoRA adapter: it was not trained in LoRA mode")
    cast = (lambda t: t) if dtype is None else (lambda t: t.to(dtype))
    lora = {k: (cast(a).contiguous(), cast(b).contiguous()) for k, (a, b) in factors.items()}
    extra = {k: cast(v.detach()).clone() for k, v in student.state_dict().items() if k.startswith(EXTRA_PARTS)}
    stored = str(next(iter(lora.values()))[0].dtype).removeprefix("torch.")
    errors = [{"rank": "stored", "relative": 0.0, "dtype": stored, "note": "trained as LoRA (no SVD)"}]
    return Patch(tmd_config=student.tmd_config, base_config=dict(base_config), rank=rank, lora=lora, full={},
                 extra=extra, provenance=dict(provenance or {}), errors=errors)


def load_lora_patch(student, patch, source: str = "the patch") -> None:
    """Put a LoRA-mode patch (e.g. the stage-1 result) into a LoRA-mode student of the same rank and targets:
    A as stored, B = B' · r / alpha (the inverse of `lora_factors`), fusion and gap embedding whole."""
    from .patch import EXTRA_PARTS

    if patch.full:
        raise CheckpointError(f"{source} also changes {len(patch.full)} tensors outside the LoRA matrices (e.g. "
                              f"{sorted(patch.full)[:2]}): it was extracted from a full student, which LoRA mode "
                              "cannot continue; continue it with model.mode full")
    tr = student.transformer
    params = dict(tr.named_parameters())
    own = {f"{k.removesuffix('.lora_A.' + STUDENT_ADAPTER + '.weight')}.weight"
           for k in params if k.endswith(f".lora_A.{STUDENT_ADAPTER}.weight")}
    if set(patch.lora) != own:
        raise CheckpointError(
            f"{source} adapts {len(patch.lora)} matrices, this run's LoRA {len(own)} (only in the patch: "
            f"{sorted(set(patch.lora) - own)[:2]}, only in the run: {sorted(own - set(patch.lora))[:2]}): continue "
            "it with the model.lora_targets it was trained with")
    with torch.no_grad():
        for key, (a, b) in patch.lora.items():
            module = key.removesuffix(".weight")
            pa = params[f"{module}.lora_A.{STUDENT_ADAPTER}.weight"]
            pb = params[f"{module}.lora_B.{STUDENT_ADAPTER}.weight"]
            if tuple(a.shape) != tuple(pa.shape) or tuple(b.shape) != tuple(pb.shape):
                raise CheckpointError(f"{source}: the LoRA of {key} has rank {a.shape[0]}, this run's model.lora_rank "
                                      f"is {pa.shape[0]}: set model.lora_rank: {a.shape[0]}")
            scale = float(tr.get_submodule(module).scaling[STUDENT_ADAPTER])
            pa.copy_(a)
            pb.copy_((b.float() / scale).to(pb.dtype))
        own_extra = {k: v for k, v in student.named_parameters() if k.startswith(EXTRA_PARTS)}
        if own_extra.keys() != patch.extra.keys():
            raise CheckpointError(f"{source}: its fusion/gap tensors do not match this run's {student.tmd_config.fusion} "
                                  "fusion layer: continue it with the model.fusion it was trained with")
        for k, v in patch.extra.items():
            own_extra[k].copy_(v)
