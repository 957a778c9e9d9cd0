"""Benchmark of the fused gating kernels (docs/method.md §2.2 fusion layer): Triton vs the PyTorch reference, JSON out.

On CUDA: times forward and forward+backward of `gated_residual` and `modulate` on Wan-sized token
tensors for both backends and reports ms, effective bandwidth and the speed-up, plus the largest
deviation from the reference. On CPU, Triton only runs in its interpreter, so the script checks
correctness on small shapes and reports no timings (they would be meaningless).

    python benchmarks/bench_kernels.py [--dtype bf16] [--shapes 1x32760x1536,1x1560x5120]
"""

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

ON_CUDA = torch.cuda.is_available()
if not ON_CUDA:
    # Must precede the first import of tmd_core.kernels (triton reads it at kernel decoration).
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tmd_core.kernels import dispatch, gated_residual, modulate  # noqa: E402

INPUT_NAMES = {"gated_residual": ("m", "z", "gate", "alpha"), "modulate": ("x", "shift", "scale")}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Wan2.1 1.3B (D = 1536) and 14B (D = 5120) at 81 frames 480x832 (32760 tokens) and a short clip.
CUDA_SHAPES = "1x32760x1536,2x1560x1536,1x32760x5120"
CPU_SHAPES = "2x37x24,2x7x100,1x16x1536"


def _parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for item in text.split(","):
        B, T, D = (int(v) for v in item.lower().split("x"))
        shapes.append((B, T, D))
    return shapes


def _make_inputs(op: str, B: int, T: int, D: int, dtype: torch.dtype, device: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)

    def leaf(*shape, dt=dtype):
        return torch.randn(shape, generator=gen).to(device, dt).requires_grad_()

    if op == "gated_residual":
        return [leaf(B, T, D), leaf(B, T, D), leaf(B, D), leaf(dt=torch.float32)]
    return [leaf(B, T, D), leaf(B, D, dt=torch.float32), leaf(B, D, dt=torch.float32)]


def _call(op: str, inputs: list[torch.Tensor], backend: str) -> torch.Tensor:
    fn = gated_residual if op == "gated_residual" else modulate
    return fn(*inputs, backend=backend)


def _fwd_bwd(op: str, inputs: list[torch.Tensor], backend: str, grad_out: torch.Tensor):
    for t in inputs:
        t.grad = None
    out = _call(op, inputs, backend)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in inputs]


def _max_errors(op: str, inputs: list[torch.Tensor], grad_out: torch.Tensor) -> dict[str, float]:
    out_t, grads_t = _fwd_bwd(op, inputs, "triton", grad_out)
    out_r, grads_r = _fwd_bwd(op, inputs, "torch", grad_out)
    errors = {"out": (out_t.float() - out_r.float()).abs().max().item()}
    for name, g_t, g_r in zip(INPUT_NAMES[op], grads_t, grads_r, strict=True):
        errors[f"grad_{name}"] = (g_t.float() - g_r.float()).abs().max().item()
    return errors


def _time_cuda(op: str, inputs: list[torch.Tensor], backend: str, grad_out: torch.Tensor) -> dict[str, float]:
    from triton.testing import do_bench

    with torch.no_grad():
        fwd_ms = do_bench(lambda: _call(op, inputs, backend))
    fwd_bwd_ms = do_bench(lambda: _call(op, inputs, backend).backward(grad_out), grad_to_none=inputs)
    return {"fwd_ms": fwd_ms, "fwd_bwd_ms": fwd_bwd_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16" if ON_CUDA else "fp32")
    parser.add_argument("--shapes", default=CUDA_SHAPES if ON_CUDA else CPU_SHAPES, help="BxTxD,...")
    args = parser.parse_args()
    device = "cuda" if ON_CUDA else "cpu"
    dtype = DTYPES[args.dtype]
    report = {
        "benchmark": "fused_gating_kernels",
        "device": torch.cuda.get_device_name() if ON_CUDA else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dtype": args.dtype,
        "available_backends": list(dispatch.available_backends()),
        "triton_interpreter": dispatch.TRITON_INTERPRET,
        "timing_meaningful": ON_CUDA and not dispatch.TRITON_INTERPRET,
        "results": [],
    }
    if not report["timing_meaningful"]:
        report["note"] = (
            "Triton runs in its CPU interpreter here: only correctness against the reference is "
            "reported; timings need a CUDA device."
        )
    if "triton" not in report["available_backends"]:
        report["note"] = f"triton cannot run here ({dispatch.TRITON_IMPORT_ERROR or 'no CUDA, no interpreter'})"
        print(json.dumps(report, indent=2))
        return
    elem = torch.empty((), dtype=dtype).element_size()
    for B, T, D in _parse_shapes(args.shapes):
        for op in ("gated_residual", "modulate"):
            inputs = _make_inputs(op, B, T, D, dtype, device)
            grad_out = torch.randn(B, T, D, generator=torch.Generator().manual_seed(1)).to(device, dtype)
            row = {"op": op, "shape": [B, T, D], "max_abs_error": _max_errors(op, inputs, grad_out)}
            if report["timing_meaningful"]:
                # Token-sized tensors moved per call (the per-sample vectors are negligible):
                # gated residual reads m, z and writes h; modulate reads x and writes y.
                fwd_bytes = (3 if op == "gated_residual" else 2) * B * T * D * elem
                for backend in ("torch", "triton"):
                    t = _time_cuda(op, inputs, backend, grad_out)
                    t["fwd_GBps"] = fwd_bytes / t["fwd_ms"] / 1e6
                    row[backend] = t
                row["speedup_fwd"] = row["torch"]["fwd_ms"] / row["triton"]["fwd_ms"]
                row["speedup_fwd_bwd"] = row["torch"]["fwd_bwd_ms"] / row["triton"]["fwd_bwd_ms"]
            report["results"].append(row)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
