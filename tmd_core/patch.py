"""TMD patches: what a TMD student adds to its teacher (docs/patches.md).

A patch holds the student's fusion layer and gap embedding whole, and the difference between the student's
transformer and the teacher's: a low-rank LoRA (ΔW ≈ B @ A, truncated SVD) for every weight matrix (linear
layers and the patch-embedding convolution, flattened to [out, in·k]), and the full difference for every other
tensor that changed (biases, norms, modulation tables). `apply_patch` merges it into a teacher and returns a
`TMDModel` for the samplers. The file format is in `patch_file.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import CheckpointError, InputError
from .layouts import SHAPE_FIELDS, match_shipped_config, normalize_config
from .model import TMDConfig, TMDModel

# what fixes a patch's tensors and their meaning: a teacher must agree on all of them (docs/patches.md §3)
ARCH_FIELDS = (*SHAPE_FIELDS, "cross_attn_norm", "qk_norm", "image_dim", "added_kv_proj_dim")
EXTRA_PARTS = ("fusion.", "emb_gap.")  # the student's own modules, stored whole
SVD_FP64_MAX = 1 << 20  # matrices up to this many elements are decomposed in float64, larger ones in float32


@dataclass
class Patch:
    """A TMD student as teacher + patch (diffusers key names inside; `patch_file` maps them for ComfyUI)."""

    tmd_config: TMDConfig
    base_config: dict  # the teacher's diffusers config: the base architecture
    rank: int  # the requested rank R; a matrix smaller than R keeps min(out, in) ranks
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]]  # weight key -> (A [r, in], B [out, r]); ΔW = (B @ A).reshape
    full: dict[str, torch.Tensor]  # key -> ΔW stored whole (biases, norms, modulation; float32)
    extra: dict[str, torch.Tensor]  # fusion.* and emb_gap.* of the student
    provenance: dict = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)  # per rank: relative error, aggregated and the worst layer

    def delta(self, key: str) -> torch.Tensor:
        """ΔW of one LoRA weight, float32, flattened [out, in·k]."""
        a, b = self.lora[key]
        return b.float() @ a.float()


def report_ranks(rank: int) -> list[int]:
    """Ranks `tmd extract-lora` reports: 8, 16, 32, ... below `rank`, then `rank`."""
    out, r = [], 8
    while r < rank:
        out.append(r)
        r *= 2
    return [*out, rank]


def describe_architecture(config: Mapping) -> str:
    """A Wan architecture in words: the shipped model it is, or its sizes."""
    c = normalize_config(config)
    name = {"wan21_t2v_1.3b": "Wan2.1 T2V 1.3B", "wan21_t2v_14b": "Wan2.1 T2V 14B"}.get(match_shipped_config(c) or "",
                                                                                       "a Wan model")
    width = c.get("num_attention_heads", 0) * c.get("attention_head_dim", 0)
    return (f"{name} ({c.get('num_layers')} layers, width {width}, {c.get('num_attention_heads')} heads, "
            f"ffn {c.get('ffn_dim')}, {c.get('in_channels')}->{c.get('out_channels')} latent channels, "
            f"text {c.get('text_dim')})")


STUDENT_HINT = "pass the teacher the student was distilled from"
PATCH_HINT = "a patch only fits the architecture of the teacher it was extracted from; use that teacher (its provenance names it)"


def check_same_architecture(patch_config: Mapping, teacher_config: Mapping, patch_name: str = "the patch",
                            teacher_name: str = "the teacher", hint: str = PATCH_HINT) -> None:
    """CheckpointError naming both architectures unless they agree on every field of ARCH_FIELDS."""
    p, t = normalize_config(patch_config), normalize_config(teacher_config)
    differ = [f"{k} {p.get(k)} vs {t.get(k)}" for k in ARCH_FIELDS if p.get(k) != t.get(k)]
    if differ:
        raise CheckpointError(f"{patch_name} was made for {describe_architecture(p)}; {teacher_name} is "
                              f"{describe_architecture(t)} (they differ in {', '.join(differ)}): {hint}")


def _transformer_part(student_sd: Mapping) -> dict:
    return {k.removeprefix("transformer."): v for k, v in student_sd.items() if k.startswith("transformer.")}


def _is_lora_weight(key: str, value: torch.Tensor) -> bool:
    return key.endswith(".weight") and value.ndim >= 2


def _svd(mat: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U [out, k], S [k], Vh [k, in]) of the k >= min(rank, out, in) largest singular values of `mat`.

    Small matrices: exact, float64. Large ones (> SVD_FP64_MAX elements): float32; exact when the rank is at
    least a quarter of min(out, in), else randomized (torch.svd_lowrank, rank + 16 columns, 4 power iterations),
    about 5x faster on Wan's 1536 x 8960 FFN matrices. LAPACK is several times slower on wide matrices than on
    tall ones, so a wide matrix is decomposed as its transpose.
    """
    if mat.numel() <= SVD_FP64_MAX:
        return torch.linalg.svd(mat.double(), full_matrices=False)
    wide = mat.shape[0] < mat.shape[1]
    m = mat.float().T if wide else mat.float()
    if 4 * rank < min(m.shape):
        with torch.random.fork_rng():  # the same patch on every run, whatever the caller's random state
            torch.manual_seed(0)
            u, s, v = torch.svd_lowrank(m, q=min(rank + 16, min(m.shape)), niter=4)
        vh = v.T
    else:
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return (vh.T, s, u.T) if wide else (u, s, vh)


def _error_rows(tails: dict[str, torch.Tensor], totals: dict[str, float], ranks: list[int]) -> list[dict]:
    """Relative errors ‖ΔW − ΔW_r‖/‖ΔW‖ per rank: over all LoRA weights together, and the worst single one."""
    rows = []
    total = sum(totals.values())
    for r in ranks:
        per = {k: math.sqrt(float(tail[min(r, len(tail) - 1)]) / totals[k]) for k, tail in tails.items()}
        worst = max(per, key=per.get) if per else None
        worst = worst if worst and per[worst] > 0 else None
        agg = math.sqrt(sum(float(tail[min(r, len(tail) - 1)]) for tail in tails.values()) / total) if total else 0.0
        rows.append({"rank": r, "relative": agg, "max_layer": per[worst] if worst else 0.0, "max_layer_name": worst})
    return rows


def extract_patch(student_sd: Mapping[str, torch.Tensor], teacher_sd: Mapping[str, torch.Tensor], rank: int, *,
                  tmd_config: TMDConfig, base_config: Mapping, dtype: torch.dtype | None = None,
                  provenance: dict | None = None, progress: Callable[[int, int], None] | None = None) -> Patch:
    """The patch that turns `teacher_sd` into `student_sd`: truncated SVD of every changed weight matrix.

    Args:
        student_sd: a TMDModel state dict (`transformer.*` diffusers keys, `fusion.*`, `emb_gap.*`); tensors may be
            memory maps, each is read once.
        teacher_sd: the teacher's diffusers state dict (keys without `transformer.`).
        rank: R, 1 or more; a matrix keeps min(R, out, in) ranks.
        tmd_config, base_config: the student's TMDConfig and the teacher's diffusers config.
        dtype: of the LoRA factors and the fusion/gap tensors (default: the student's); differences stored whole are
            float32.
        progress: called with (done, total) after each tensor.
    Returns:
        The Patch, with `errors` for ranks `report_ranks(rank)` and a row "stored" measured on the cast factors.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InputError(f"rank must be an integer of 1 or more, got {rank!r}")
    student = _transformer_part(student_sd)
    missing, unexpected = sorted(set(teacher_sd) - set(student)), sorted(set(student) - set(teacher_sd))
    wrong = [k for k in student if k in teacher_sd and tuple(student[k].shape) != tuple(teacher_sd[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"the student's transformer does not have the teacher's tensors (only in the teacher {len(missing)}: "
            f"{missing[:3]}, only in the student {len(unexpected)}: {unexpected[:3]}, other shapes {len(wrong)}: "
            f"{wrong[:3]}): the student was distilled from a teacher of another architecture; pass that teacher")
    extra = {k: v for k, v in student_sd.items() if k.startswith(EXTRA_PARTS)}
    if not extra:
        raise CheckpointError("the student has no fusion.* or emb_gap.* tensors: it is not a TMD student")
    if dtype is None:
        dtype = next(v.dtype for k, v in student.items() if v.is_floating_point())
    lora, full, tails, totals, stored_sq = {}, {}, {}, {}, 0.0
    keys = sorted(student)
    for i, k in enumerate(keys):
        delta = student[k].float() - teacher_sd[k].float()
        if torch.count_nonzero(delta) == 0:
            pass
        elif _is_lora_weight(k, delta):
            mat = delta.flatten(1)
            u, s, vh = _svd(mat, rank)
            r = min(rank, s.numel())
            root = s[:r].sqrt()
            a, b = (root[:, None] * vh[:r]).to(u.dtype), (u[:, :r] * root).to(u.dtype)
            lora[k] = (a.to(dtype).contiguous(), b.to(dtype).contiguous())
            totals[k] = float(mat.double().square().sum())
            # tails[k][r] = ‖ΔW‖² − Σ_{i<r} σ_i² = ‖ΔW − ΔW_r‖²; past the singular values computed: 0 (exact SVD)
            # or the last value (randomized: only the top ranks are known, and only they are reported)
            kept = torch.cat([s.new_zeros(1), s.double().square().cumsum(0)])
            tails[k] = (totals[k] - kept).clamp_min(0.0)
            a, b = lora[k]
            stored_sq += float((mat - b.float() @ a.float()).double().square().sum())
        else:
            full[k] = delta
        if progress:
            progress(i + 1, len(keys))
    errors = _error_rows(tails, totals, report_ranks(rank))
    total = sum(totals.values())
    errors.append({"rank": "stored", "relative": math.sqrt(stored_sq / total) if total else 0.0,
                   "dtype": str(dtype).removeprefix("torch.")})
    return Patch(tmd_config=tmd_config, base_config=normalize_config(base_config), rank=rank, lora=lora, full=full,
                 extra={k: v.to(dtype) if v.is_floating_point() else v for k, v in extra.items()},
                 provenance=dict(provenance or {}), errors=errors)


def extract_patch_from_models(student: TMDModel, teacher: nn.Module, rank: int, **kwargs) -> Patch:
    """`extract_patch` for a loaded TMDModel and its teacher (a diffusers WanTransformer3DModel)."""
    from .wan_build import transformer_config_dict

    check_same_architecture(transformer_config_dict(student.transformer), transformer_config_dict(teacher),
                            "the student", "the teacher", STUDENT_HINT)
    return extract_patch(student.state_dict(), teacher.state_dict(), rank, tmd_config=student.tmd_config,
                         base_config=transformer_config_dict(teacher), **kwargs)


def _set(module: nn.Module, key: str, value: torch.Tensor) -> None:
    """Replace a parameter's data (never written in place: a loaded teacher's tensors may map its file)."""
    *path, name = key.split(".")
    owner = module.get_submodule(".".join(path))
    old = getattr(owner, name)
    if isinstance(old, nn.Parameter):
        owner._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        owner._buffers[name] = value


def apply_patch(teacher, patch: Patch, *, source: str = "the patch", teacher_name: str = "the teacher") -> TMDModel:
    """The TMD student = teacher + patch. The teacher module is changed (its merged weights become the student's)
    and shared, as `TMDModel.from_teacher` shares it: pass a copy to keep the teacher.

    Args:
        teacher: a diffusers WanTransformer3DModel, or a state dict in any layout `teacher_from_state_dict` reads.
        patch: a Patch (`load_patch` or `extract_patch`).
    Returns:
        TMDModel in eval mode, on the teacher's device and in its dtype. Each LoRA weight is merged as
        W + B @ A in float32, then cast to the teacher's dtype.
    """
    from .wan_build import transformer_config_dict

    if isinstance(teacher, Mapping):
        from .loading import teacher_from_state_dict

        teacher = teacher_from_state_dict(teacher, config=patch.base_config, source=teacher_name)
    check_same_architecture(patch.base_config, transformer_config_dict(teacher), source, teacher_name)
    own = dict(teacher.state_dict())
    for k in [*patch.lora, *patch.full]:  # every check before the first change: a refused patch leaves the teacher
        if k not in own:
            raise CheckpointError(f"{source} changes {k!r}, which {teacher_name} does not have: the patch is corrupt "
                                  "or for another model; extract it again")
        w = own[k]
        if k in patch.lora:
            a, b = patch.lora[k]
            ok, got = b.shape[0] * a.shape[1] == w.numel() and b.shape[0] == w.shape[0], f"B {tuple(b.shape)} @ A {tuple(a.shape)}"
        else:
            ok, got = tuple(patch.full[k].shape) == tuple(w.shape), f"a difference of {tuple(patch.full[k].shape)}"
        if not ok:
            raise CheckpointError(f"{source}: {k!r} is {tuple(w.shape)} in {teacher_name}, the patch holds {got}: "
                                  "the patch is corrupt; extract it again")
    with torch.no_grad():
        for k in patch.lora:  # pop: the replaced tensor (and its pages of a mapped file) is freed at once
            w = own.pop(k)
            _set(teacher, k, (w.float() + patch.delta(k).to(w.device).reshape(w.shape)).to(w.dtype))
        for k, d in patch.full.items():
            w = own.pop(k)
            _set(teacher, k, (w.float() + d.to(w.device).float()).to(w.dtype))
    own = w = None  # drop the last references to replaced tensors
    model = TMDModel(teacher, patch.tmd_config)
    p = next(teacher.parameters())
    own_extra = {k: v for k, v in model.state_dict().items() if k.startswith(EXTRA_PARTS)}
    if set(own_extra) != set(patch.extra):
        raise CheckpointError(f"{source}: its fusion/gap tensors {sorted(patch.extra)[:4]} do not match a "
                              f"{patch.tmd_config.fusion} fusion layer ({sorted(own_extra)[:4]}): the patch is corrupt")
    with torch.no_grad():
        for k, v in patch.extra.items():
            if tuple(v.shape) != tuple(own_extra[k].shape):
                raise CheckpointError(f"{source}: {k} has shape {tuple(v.shape)}, this architecture needs "
                                      f"{tuple(own_extra[k].shape)}: the patch is corrupt")
            _set(model, k, v.to(device=p.device, dtype=p.dtype))
    return model.eval()
