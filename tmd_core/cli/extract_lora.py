"""`tmd extract-lora STUDENT --teacher T --rank R`: a TMD patch from a full student (docs/patches.md).

Prints the relative approximation error ‖ΔW − ΔW_r‖/‖ΔW‖ over every LoRA weight together and for the worst one,
for ranks 8, 16, 32, ... up to R, and the error of the factors as stored (after the cast to --dtype).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DTYPES = {"student": None, "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def register(sub) -> None:
    p = sub.add_parser("extract-lora", help="make a TMD patch (LoRA + fusion layer) from a full TMD student",
                       description="Truncated SVD of (student - teacher) for every weight matrix; changed biases, "
                       "norms and modulation tables are stored whole, the fusion layer and gap embedding too. The "
                       "patch loads onto the teacher's architecture only (tmd generate PATCH --teacher T).")
    p.add_argument("student", help="a tmd/1 TMD student")
    p.add_argument("--teacher", required=True, help="the Wan teacher it was distilled from (any layout)")
    p.add_argument("--rank", type=int, required=True, help="LoRA rank R (a matrix smaller than R keeps all its ranks)")
    p.add_argument("--out", help="where to write the patch (default: <student>.lora<R>.safetensors beside it)")
    p.add_argument("--dtype", choices=list(DTYPES), default="student",
                   help="dtype of the LoRA factors and the fusion layer (default: the student's)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--json", action="store_true", help="print the error table as JSON")
    p.set_defaults(func=run)


def _plan(args) -> tuple[dict, Path]:
    """Every input checked from the headers, before anything is loaded."""
    from ..errors import InputError
    from ..loading import describe_checkpoint
    from ..patch import STUDENT_HINT, check_same_architecture
    from ..validation import check_int, check_output_file

    check_int("--rank", args.rank, 1, 1 << 16, hint="a LoRA rank such as 32 or 64")
    info = describe_checkpoint(args.student)
    if info["kind"] != "tmd":
        what = "a TMD patch already" if info["kind"] == "tmd-patch" else f"a plain Wan model ({info['kind']})"
        raise InputError(f"STUDENT: {Path(args.student).name} is {what}; extract-lora needs a full TMD student (tmd/1)")
    from ..patch_file import check_teacher_info

    t_info = describe_checkpoint(args.teacher)
    check_teacher_info(t_info, Path(args.teacher).name, "--teacher:", InputError)
    check_same_architecture(info["transformer_config"], t_info["transformer_config"],
                            f"the student {Path(args.student).name}", f"the teacher {Path(args.teacher).name}",
                            STUDENT_HINT)
    student = Path(args.student)
    out = check_output_file("--out", args.out or student.with_name(f"{student.stem}.lora{args.rank}.safetensors"),
                            force=args.force)
    if out.suffix != ".safetensors":
        raise InputError(f"--out: {out.name} must end in .safetensors")
    if out.resolve() in (student.resolve(), Path(args.teacher).resolve()):
        raise InputError("--out names the student or the teacher: choose another file")
    return info, out


def format_errors(errors: list[dict]) -> str:
    lines = ["rank    rel. error (all LoRA weights)   worst layer"]
    for e in errors:
        if e["rank"] == "stored":
            lines.append(f"stored  {e['relative']:.3e}  (rank {errors[-2]['rank']}, factors cast to {e['dtype']})")
        else:
            lines.append(f"{e['rank']:<6}  {e['relative']:.3e}                       {e['max_layer']:.3e}  "
                         f"{e['max_layer_name'] or '-'}")
    return "\n".join(lines)


def run(args) -> int:
    import torch
    from tqdm.auto import tqdm

    from ..loading import _open_tensors, load_teacher, teacher_sha256
    from ..model import TMDConfig
    from ..patch import extract_patch
    from ..patch_file import save_patch

    info, out = _plan(args)
    t0 = time.perf_counter()
    teacher = load_teacher(args.teacher)
    student_sd = _open_tensors([Path(args.student)])
    dtype = getattr(torch, DTYPES[args.dtype]) if DTYPES[args.dtype] else None
    provenance = {"student": Path(args.student).name, "student_sha256": teacher_sha256(args.student),
                  "teacher": Path(args.teacher).name, "teacher_sha256": teacher_sha256(args.teacher),
                  "student_provenance": info["provenance"]}
    with tqdm(total=len(teacher.state_dict()), desc="SVD", unit="tensor", leave=False) as bar:
        patch = extract_patch(student_sd, teacher.state_dict(), args.rank,
                              tmd_config=TMDConfig.from_dict(info["tmd_config"]),
                              base_config=info["transformer_config"], dtype=dtype, provenance=provenance,
                              progress=lambda done, total: bar.update(done - bar.n))
    save_patch(patch, out)
    seconds = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"out": str(out), "rank": args.rank, "errors": patch.errors, "seconds": round(seconds, 2),
                          "file_bytes": out.stat().st_size}, indent=2))
    else:
        print(format_errors(patch.errors))
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB: {len(patch.lora)} LoRA weights, {len(patch.full)} "
              f"tensors whole, fusion + gap embedding) in {seconds:.1f} s")
    return 0
