"""The `tmd` command line (also `python -m tmd_core`). Each verb lives in its own module here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import TMDError

# verb modules; each defines `register(subparsers)` which adds one sub-command whose
# handler is stored as `func` (returns an exit code or None).
_VERBS = ["demo", "info", "generate", "distill", "make_data", "toy", "comfy_run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmd", description="Transition Matching Distillation for Wan2.1 video")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in _VERBS:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except TMDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
