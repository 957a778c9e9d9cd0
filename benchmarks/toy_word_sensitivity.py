"""Does a toy teacher use each word of its prompt? (tmd_core.toy.probe; README "Toy world").

    python benchmarks/toy_word_sensitivity.py                                   # the shipped teacher
    python benchmarks/toy_word_sensitivity.py --teacher runs/toy/teacher.safetensors --vae runs/toy/vae.safetensors

Prints, per word, the relative loss increase when that word is swapped, at each noise level t.
(Teachers of the first two toy worlds, before the learned VAE, need the pack at git f4f9b2c to probe.)
"""

import argparse
import json

import torch

from tmd_core.loading import load_teacher
from tmd_core.toy.probe import format_sensitivity, word_sensitivity
from tmd_core.toy.shipped import asset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", help="teacher checkpoint (default: the shipped toy teacher)")
    ap.add_argument("--vae", help="the toy VAE that teacher was trained with (default: the shipped one)")
    ap.add_argument("--out", help="also write the result as JSON here")
    args = ap.parse_args()
    teacher = load_teacher(args.teacher or asset("toy_teacher"), dtype=torch.float32)
    sens = word_sensitivity(teacher, vae=args.vae)
    print(format_sensitivity(sens))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"teacher": args.teacher or "shipped", "vae": args.vae or "shipped", **sens}, fh, indent=1)


if __name__ == "__main__":
    main()
