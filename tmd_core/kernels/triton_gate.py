"""Triton forward/backward kernels of the fusion layer's gated residual and AdaLN modulate (docs/method.md §2.2).

Each program handles a `[BLOCK_T, BLOCK_D]` tile of tokens of one sample, with
`BLOCK_D = next_power_of_2(D)` and masks, so any `D` works (24, 40, 1536, 5120, ...). Loads are
upcast to fp32 (fp64 when an input is fp64, for gradcheck) and results cast back to the output
dtype. The per-sample gradients (gate, shift, scale) are token reductions: every backward program
accumulates its share into a private row of a small `[B, n_chunks, D]` buffer that torch sums
afterwards — deterministic, no atomics. Readable ground truth: `reference.py`. Inputs are
validated by the dispatcher (`dispatch.py`); this module assumes well-formed tensors.

Importing this module imports triton. Kernels are decorated at import, and triton decides then
whether they run compiled (CUDA) or in its CPU interpreter (`TRITON_INTERPRET=1` in the
environment before this import); `INTERPRETED` records which. The interpreter (triton 3.x) rounds
fp32 -> bf16 stores toward zero where GPUs round to nearest even, so interpreted bf16 outputs can
differ from the reference by one bf16 ulp; fp32/fp16/fp64 are unaffected.
"""

import os

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .reference import compute_dtype


def _interpreter_on() -> bool:
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4 reads TRITON_INTERPRET through knobs
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "on", "yes"}


# Decided once, together with the @triton.jit decoration below (which reads the same setting).
INTERPRETED = _interpreter_on()

# Elements per tile: enough work per program for tiny D (many tokens per tile) without spilling
# registers for large D (one token per tile once BLOCK_D >= 4096).
_TILE_ELEMS = 4096
# Largest padded row a single program holds (64 KiB of fp32 per row, as in triton's LayerNorm).
MAX_BLOCK_D = 16384
# Backward programs per sample when not on CUDA (the interpreter runs programs one by one).
_CPU_CHUNKS = 4

_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


@triton.jit
def _gated_residual_fwd_kernel(
    m_ptr, z_ptr, gate_ptr, alpha_ptr, h_ptr,
    T, D, stride_gate_b,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)  # int64 offsets: B·T·D can exceed 2^31 for long videos
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    mask = (rows[:, None] < T) & col_mask[None, :]
    offs = b * T * D + rows[:, None].to(tl.int64) * D + cols[None, :]

    alpha = tl.load(alpha_ptr).to(ACC)
    sigma = 1.0 / (1.0 + tl.exp(-alpha))
    # σ(α) · g once per tile instead of per token
    sg = sigma * tl.load(gate_ptr + b * stride_gate_b + cols, mask=col_mask, other=0.0).to(ACC)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(ACC)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
    h = m + sg[None, :] * z
    tl.store(h_ptr + offs, h.to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gated_residual_bwd_kernel(
    dh_ptr, z_ptr, gate_ptr, alpha_ptr, dz_ptr, dgz_ptr,
    T, D, stride_gate_b, n_chunks,
    COMPUTE_DZ: tl.constexpr, COMPUTE_DGZ: tl.constexpr,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # dz = σ(α) g ⊙ dh per token; dgz[b, d] = Σ_t dh ⊙ z, from which the host forms
    # dgate = σ(α) dgz and dα = σ'(α) Σ_d dgz ⊙ g (both need only this one reduction).
    chunk = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D

    alpha = tl.load(alpha_ptr).to(ACC)
    sigma = 1.0 / (1.0 + tl.exp(-alpha))
    sg = sigma * tl.load(gate_ptr + b * stride_gate_b + cols, mask=col_mask, other=0.0).to(ACC)
    dgz = tl.zeros([BLOCK_D], dtype=ACC)
    # Strided walk over the sample's tiles: a bounded number of programs per sample keeps the
    # partial-sum buffer small however many tokens there are.
    for t0 in range(chunk * BLOCK_T, T, n_chunks * BLOCK_T):
        rows = t0 + tl.arange(0, BLOCK_T)
        mask = (rows[:, None] < T) & col_mask[None, :]
        offs = b * T * D + rows[:, None].to(tl.int64) * D + cols[None, :]
        dh = tl.load(dh_ptr + offs, mask=mask, other=0.0).to(ACC)
        if COMPUTE_DZ:
            tl.store(dz_ptr + offs, (sg[None, :] * dh).to(dz_ptr.dtype.element_ty), mask=mask)
        if COMPUTE_DGZ:
            z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
            dgz += tl.sum(dh * z, axis=0)
    if COMPUTE_DGZ:
        tl.store(dgz_ptr + (b * n_chunks + chunk) * D + cols, dgz, mask=col_mask)


@triton.jit
def _modulate_fwd_kernel(
    x_ptr, shift_ptr, scale_ptr, y_ptr, mean_ptr, rstd_ptr,
    T, D, stride_shift_b, stride_scale_b, eps,
    SAVE_STATS: tl.constexpr,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    row_mask = rows < T
    mask = row_mask[:, None] & col_mask[None, :]
    offs = b * T * D + rows[:, None].to(tl.int64) * D + cols[None, :]

    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    # Biased variance over the true D: padded columns load as 0 and are masked out of x - mean.
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / D
    rstd = 1.0 / tl.sqrt(var + eps)
    x_hat = xc * rstd[:, None]

    shift = tl.load(shift_ptr + b * stride_shift_b + cols, mask=col_mask, other=0.0).to(ACC)
    scale = tl.load(scale_ptr + b * stride_scale_b + cols, mask=col_mask, other=0.0).to(ACC)
    y = x_hat * (1.0 + scale[None, :]) + shift[None, :]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
    if SAVE_STATS:
        tl.store(mean_ptr + b * T + rows, mean, mask=row_mask)
        tl.store(rstd_ptr + b * T + rows, rstd, mask=row_mask)


@triton.jit
def _modulate_bwd_kernel(
    dy_ptr, x_ptr, scale_ptr, mean_ptr, rstd_ptr, dx_ptr, dscale_ptr, dshift_ptr,
    T, D, stride_scale_b, n_chunks,
    COMPUTE_DX: tl.constexpr, COMPUTE_DMOD: tl.constexpr,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    chunk = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    one_plus_scale = 1.0 + tl.load(
        scale_ptr + b * stride_scale_b + cols, mask=col_mask, other=0.0
    ).to(ACC)
    dscale = tl.zeros([BLOCK_D], dtype=ACC)
    dshift = tl.zeros([BLOCK_D], dtype=ACC)
    for t0 in range(chunk * BLOCK_T, T, n_chunks * BLOCK_T):
        rows = t0 + tl.arange(0, BLOCK_T)
        row_mask = rows < T
        mask = row_mask[:, None] & col_mask[None, :]
        offs = b * T * D + rows[:, None].to(tl.int64) * D + cols[None, :]
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
        mean = tl.load(mean_ptr + b * T + rows, mask=row_mask, other=0.0)
        rstd = tl.load(rstd_ptr + b * T + rows, mask=row_mask, other=0.0)
        x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        if COMPUTE_DX:
            # LayerNorm backward with dx̂ = dy ⊙ (1 + scale):
            # dx = rstd · (dx̂ - mean_d(dx̂) - x̂ · mean_d(dx̂ ⊙ x̂))
            dx_hat = dy * one_plus_scale[None, :]
            c1 = tl.sum(dx_hat * x_hat, axis=1) / D
            c2 = tl.sum(dx_hat, axis=1) / D
            dx = (dx_hat - x_hat * c1[:, None] - c2[:, None]) * rstd[:, None]
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        if COMPUTE_DMOD:
            dscale += tl.sum(dy * x_hat, axis=0)
            dshift += tl.sum(dy, axis=0)
    if COMPUTE_DMOD:
        part = (b * n_chunks + chunk) * D + cols
        tl.store(dscale_ptr + part, dscale, mask=col_mask)
        tl.store(dshift_ptr + part, dshift, mask=col_mask)


def _tiles(T: int, D: int) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_D, num_warps) for rows of D elements."""
    block_d = triton.next_power_of_2(D)
    if block_d > MAX_BLOCK_D:
        raise ValueError(f"D = {D} exceeds the row-wise kernel limit of {MAX_BLOCK_D}; use backend='torch'")
    block_t = max(1, min(_TILE_ELEMS // block_d, triton.next_power_of_2(T)))
    num_warps = 8 if block_t * block_d >= 4096 else 4
    return block_t, block_d, num_warps


def _n_chunks(T: int, block_t: int, B: int, device: torch.device) -> int:
    """Backward programs per sample: enough to fill the GPU, never more than there are tiles."""
    if device.type == "cuda" and not INTERPRETED:
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
        per_sample = max(1, target // max(B, 1))
    else:
        per_sample = _CPU_CHUNKS
    return max(1, min(triton.cdiv(T, block_t), per_sample))


def _per_sample_2d(v: torch.Tensor) -> tuple[torch.Tensor, int]:
    """`[B', D]` contiguous view of a per-sample vector and its batch stride (0 when B' = 1)."""
    v2 = v.reshape(v.shape[0], v.shape[-1]).contiguous()
    return v2, (0 if v2.shape[0] == 1 else v2.shape[1])


def _reduce_per_sample(partial: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum `[B, n_chunks, D]` partials to the shape and dtype of the per-sample input `like`."""
    total = partial.sum(1)
    if like.shape[0] == 1:  # the input was broadcast over the batch
        total = total.sum(0, keepdim=True)
    return total.reshape(like.shape).to(like.dtype)


class GatedResidualFunction(torch.autograd.Function):
    """Autograd wrapper of the fused `h = m + σ(α) · g ⊙ z` (grads for m, z, gate and α)."""

    @staticmethod
    def forward(ctx, m, z, gate, alpha):
        B, T, D = m.shape
        acc = compute_dtype(m, z, gate, alpha)
        m, z = m.contiguous(), z.contiguous()
        gate2, stride_gate_b = _per_sample_2d(gate)
        alpha1 = alpha.reshape(1).contiguous()
        h = torch.empty_like(m)
        block_t, block_d, num_warps = _tiles(T, D)
        if h.numel() > 0:
            _gated_residual_fwd_kernel[(triton.cdiv(T, block_t), B)](
                m, z, gate2, alpha1, h, T, D, stride_gate_b,
                ACC=_TL_DTYPE[acc], BLOCK_T=block_t, BLOCK_D=block_d, num_warps=num_warps,
            )
        ctx.save_for_backward(z, gate, alpha)
        ctx.acc = acc
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, dh):
        z, gate, alpha = ctx.saved_tensors
        need_m, need_z, need_gate, need_alpha = ctx.needs_input_grad
        B, T, D = z.shape
        acc = ctx.acc
        dh = dh.contiguous()
        gate2, stride_gate_b = _per_sample_2d(gate)
        alpha1 = alpha.reshape(1).contiguous()
        block_t, block_d, num_warps = _tiles(T, D)
        n_chunks = _n_chunks(T, block_t, B, dh.device)
        dz = torch.empty_like(z) if need_z else None
        compute_dgz = need_gate or need_alpha
        dgz_partial = (
            torch.zeros(B, n_chunks, D, device=dh.device, dtype=acc) if compute_dgz else None
        )
        if dh.numel() > 0 and (need_z or compute_dgz):
            _gated_residual_bwd_kernel[(n_chunks, B)](
                dh, z, gate2, alpha1,
                dz if need_z else dh,  # unused pointers are guarded by the constexpr flags
                dgz_partial if compute_dgz else dh,
                T, D, stride_gate_b, n_chunks,
                COMPUTE_DZ=need_z, COMPUTE_DGZ=compute_dgz,
                ACC=_TL_DTYPE[acc], BLOCK_T=block_t, BLOCK_D=block_d, num_warps=num_warps,
            )
        d_gate = d_alpha = None
        if compute_dgz:
            sigma = torch.sigmoid(alpha.to(acc).reshape(()))
            dgz = dgz_partial.sum(1)  # [B, D]
            if need_gate:
                d_gate = _reduce_per_sample((sigma * dgz).unsqueeze(1), gate)
            if need_alpha:
                # σ'(α) = σ(α)(1 - σ(α)); the gate broadcasts over the batch when it has B' = 1
                g = gate2.to(acc).expand(B, D)
                d_alpha = (sigma * (1 - sigma) * (dgz * g).sum()).reshape(alpha.shape).to(alpha.dtype)
        return (dh if need_m else None), dz, d_gate, d_alpha


class ModulateFunction(torch.autograd.Function):
    """Autograd wrapper of the fused `LayerNorm(x) · (1 + scale) + shift` (grads for x, shift, scale)."""

    @staticmethod
    def forward(ctx, x, shift, scale, eps):
        B, T, D = x.shape
        acc = compute_dtype(x, shift, scale)
        x = x.contiguous()
        shift2, stride_shift_b = _per_sample_2d(shift)
        scale2, stride_scale_b = _per_sample_2d(scale)
        y = torch.empty_like(x)
        mean = torch.empty(B, T, device=x.device, dtype=acc)
        rstd = torch.empty(B, T, device=x.device, dtype=acc)
        block_t, block_d, num_warps = _tiles(T, D)
        if y.numel() > 0:
            _modulate_fwd_kernel[(triton.cdiv(T, block_t), B)](
                x, shift2, scale2, y, mean, rstd, T, D, stride_shift_b, stride_scale_b, eps,
                SAVE_STATS=True,
                ACC=_TL_DTYPE[acc], BLOCK_T=block_t, BLOCK_D=block_d, num_warps=num_warps,
            )
        ctx.save_for_backward(x, shift, scale, mean, rstd)
        ctx.acc = acc
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, shift, scale, mean, rstd = ctx.saved_tensors
        need_x, need_shift, need_scale, _ = ctx.needs_input_grad
        B, T, D = x.shape
        acc = ctx.acc
        dy = dy.contiguous()
        scale2, stride_scale_b = _per_sample_2d(scale)
        block_t, block_d, num_warps = _tiles(T, D)
        n_chunks = _n_chunks(T, block_t, B, dy.device)
        dx = torch.empty_like(x) if need_x else None
        compute_dmod = need_shift or need_scale
        if compute_dmod:
            dscale_partial = torch.zeros(B, n_chunks, D, device=dy.device, dtype=acc)
            dshift_partial = torch.zeros(B, n_chunks, D, device=dy.device, dtype=acc)
        else:
            dscale_partial = dshift_partial = dy  # placeholders, never touched
        if dy.numel() > 0 and (need_x or compute_dmod):
            _modulate_bwd_kernel[(n_chunks, B)](
                dy, x, scale2, mean, rstd, dx if need_x else dy, dscale_partial, dshift_partial,
                T, D, stride_scale_b, n_chunks,
                COMPUTE_DX=need_x, COMPUTE_DMOD=compute_dmod,
                ACC=_TL_DTYPE[acc], BLOCK_T=block_t, BLOCK_D=block_d, num_warps=num_warps,
            )
        d_shift = _reduce_per_sample(dshift_partial, shift) if need_shift else None
        d_scale = _reduce_per_sample(dscale_partial, scale) if need_scale else None
        return dx, d_shift, d_scale, None


def gated_residual_triton(
    m: torch.Tensor, z: torch.Tensor, gate: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """Fused `h = m + σ(α) · g ⊙ z` (see `reference.gated_residual_ref` for shapes and dtypes)."""
    return GatedResidualFunction.apply(m, z, gate, alpha)


def modulate_triton(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Fused `LayerNorm(x) · (1 + scale) + shift` (see `reference.modulate_ref` for shapes and dtypes)."""
    return ModulateFunction.apply(x, shift, scale, float(eps))
