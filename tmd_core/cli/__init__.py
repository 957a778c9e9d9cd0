"""The `tmd` command line (also `python -m tmd_core`). Each verb lives in its own module here.

Every failure a user can cause ends in one line, `error: <message>`, and exit code 1 (argparse's usage
errors: 2); `--debug` also prints the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from ..errors import TMDError

# verb modules; each defines `register(subparsers)` which adds one sub-command whose
# handler is stored as `func` (returns an exit code or None).
_VERBS = ["demo", "info", "generate", "distill", "make_data", "toy", "eval", "comfy_run", "extract_lora"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmd", description="Transition Matching Distillation for Wan2.1 video")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error as well as its message")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in _VERBS:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def _message(e: BaseException) -> str:
    if isinstance(e, TMDError):
        return str(e)
    if isinstance(e, OSError):  # disk full, permission denied, read-only file system, broken pipe ...
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        return (f"{e.strerror or type(e).__name__}{where} (nothing further was written; free space or choose a "
                "writable location and run again)")
    return (f"unexpected {type(e).__name__}: {e}. This is a bug in the pack: run again with --debug for the "
            "traceback and report it")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every error ends in one line; --debug adds the traceback
        if args.debug:
            traceback.print_exc()
        print(f"error: {_message(e)}", file=sys.stderr)
        return 1
    return int(rc or 0)
