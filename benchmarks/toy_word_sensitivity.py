"""Does a toy teacher use each word of its prompt? (tmd_core.toy.probe; README "Toy world").

    python benchmarks/toy_word_sensitivity.py                       # the shipped teacher
    git show afb2fdc:tmd_core/toy/assets/toy_teacher.safetensors > /tmp/t1.safetensors
    git show afb2fdc:tmd_core/toy/assets/toy_teacher.config.json > /tmp/t1.config.json
    python benchmarks/toy_word_sensitivity.py --teacher /tmp/t1.safetensors --temporal 1   # the first teacher

Prints, per word, the relative loss increase when that word is swapped, at each noise level t.
"""

import argparse
import json

import torch

from tmd_core.loading import load_teacher
from tmd_core.toy.latent import LatentFormat
from tmd_core.toy.pipeline import asset
from tmd_core.toy.probe import format_sensitivity, word_sensitivity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", help="teacher checkpoint (default: the shipped toy teacher)")
    ap.add_argument("--temporal", type=int, default=4, help="frames per latent frame of that teacher")
    ap.add_argument("--out", help="also write the result as JSON here")
    args = ap.parse_args()
    teacher = load_teacher(args.teacher or asset("toy_teacher"), dtype=torch.float32)
    sens = word_sensitivity(teacher, fmt=LatentFormat(spatial=4, temporal=args.temporal))
    print(format_sensitivity(sens))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"teacher": args.teacher or "shipped", "temporal": args.temporal, **sens}, fh, indent=1)


if __name__ == "__main__":
    main()
