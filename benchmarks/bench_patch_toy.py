"""ToyBench of TMD patches extracted from the shipped toy student, next to the full student (docs/patches.md §5).

    python benchmarks/bench_patch_toy.py                      # ranks 32 and 64, full ToyBench (48 prompts x 4 seeds)
    python benchmarks/bench_patch_toy.py --quick --spread-seeds 2   # the demo's quick set: 12 prompts x 4 seeds

Each patch is made with the command a user runs (`tmd extract-lora STUDENT --teacher T --rank R`, factors in the
student's dtype, bf16), loaded onto the shipped teacher (`load_patched`) and sampled at 1x2 and 2x2 like the full
student; every model in fp32, as `tmd toy bench` runs them. Paired differences patch - full student over the same
(prompt, seed) pairs, and the inner-noise spread at 2x2 (outer seeds x inner draws, over the first 12
prompts). Writes benchmarks/results/toy_patches.json.
"""

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from tmd_core.checkpoint import load_tmd
from tmd_core.cli import main as tmd_main
from tmd_core.patch_file import load_patched, read_patch_info
from tmd_core.toy.autoencoder import load_vae
from tmd_core.toy.bench import benchmark_set, compare, describe_benchmark, format_table, write_json
from tmd_core.toy.demo import quick_pairs
from tmd_core.toy.evaluate import add_noise_spread, run_bench, tmd_methods
from tmd_core.toy.shipped import asset

GRID = ((1, 2), (2, 2))
KEYS = ("adherence", "quality", "diversity", "overall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="32,64", help="comma-separated LoRA ranks (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="the demo's quick ToyBench: the first 12 prompts x 4 seeds")
    ap.add_argument("--spread-seeds", type=int, default=4, help="outer seeds = inner draws of the inner-noise "
                    "spread (default %(default)s, as tmd toy bench; 0 skips it)")
    ap.add_argument("--json", default="benchmarks/results/toy_patches.json", help="where to write the results")
    args = ap.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    vae = load_vae(asset("toy_vae"))
    teacher_path, student_path = asset("toy_teacher"), asset("toy_tmd")
    pairs = quick_pairs() if args.quick else benchmark_set()
    models = {"full student": load_tmd(student_path, dtype=torch.float32)}
    patches = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in ranks:
            out = Path(tmp) / f"toy_tmd.lora{r}.safetensors"
            t0 = time.perf_counter()
            assert tmd_main(["extract-lora", str(student_path), "--teacher", str(teacher_path), "--rank", str(r),
                             "--out", str(out)]) == 0
            info = read_patch_info(out)
            patches[r] = {"file_bytes": info["file_bytes"], "errors": info["lora"]["errors"],
                          "extract_seconds": round(time.perf_counter() - t0, 2)}
            models[f"patch rank {r}"] = load_patched(out, teacher_path, dtype=torch.float32)
    rows = []
    for label, model in models.items():
        for row in run_bench(tmd_methods(model, GRID), pairs, vae=vae):
            row["name"] = f"{label}: {row['name']}"
            row["model"] = label
            if row["name"].endswith("outer 2 x inner 2") and args.spread_seeds:
                add_noise_spread(row, model, dataclasses.replace(model.tmd_config.schedule, outer_steps=2,
                                                                 inner_steps=2), vae,
                                 outer_seeds=tuple(range(args.spread_seeds)), inner_draws=args.spread_seeds)
            rows.append(row)
    print(format_table(rows))
    by_name = {r["name"]: r for r in rows}
    diffs = {}
    for r in ranks:
        for m, n in GRID:
            a, b = f"patch rank {r}: TMD outer {m} x inner {n}", f"full student: TMD outer {m} x inner {n}"
            diffs[f"{a} - {b}"] = {k: compare(by_name[a], by_name[b], k).to_dict() for k in KEYS}
            print(f"{a} - full: " + ", ".join(f"{k} {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
                                             for k, d in diffs[f"{a} - {b}"].items()))
    for row in rows:
        if "inner_outer_ratio" in row:
            print(f"{row['name']}: inner/outer {row['inner_outer_ratio']:.2f}")
    command = " ".join(["python benchmarks/bench_patch_toy.py", *([f"--ranks {args.ranks}"] if args.ranks != "32,64" else []),
                        *(["--quick"] if args.quick else []),
                        *([f"--spread-seeds {args.spread_seeds}"] if args.spread_seeds != 4 else [])])
    meta = {**describe_benchmark(), "quick": args.quick, "pairs": len(pairs), "patches": patches,
            "spread": {"outer_seeds": args.spread_seeds, "inner_draws": args.spread_seeds, "prompts": 12},
            "paired_differences": diffs, "command": command}
    write_json(args.json, rows, meta=meta, per_clip=False)
    print(json.dumps(patches, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
