"""`tmd comfy-run`: queue an API-format workflow on a running ComfyUI, follow it, download its outputs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..comfy_client import (
    ComfyClient,
    ComfyUsageError,
    Progress,
    apply_overrides,
    load_workflow,
    output_files,
    parse_override,
)

EPILOG = """\
examples:
  tmd comfy-run workflows/api/toy_tmd.json --server http://127.0.0.1:8188 --out out/
  tmd comfy-run workflows/api/wan21_t2v_1.3b_tmd.json --set TMDSchedule.outer_steps=1 \
      --set "Positive prompt.text=a red fox in snow" --out out/

NODE is a node id, a class_type that occurs once, or a node title (_meta.title); VALUE is JSON when it
parses (2, 1.5, true, ["4", 0]) and a plain string otherwise.
exit codes: 0 done, 1 rejected by validation / failed while running / timed out / unreachable, 2 usage."""


class _ProgressPrinter:
    """One progress line on stderr: rewritten in place on a terminal, one line per change otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = None

    def __call__(self, p: Progress) -> None:
        text = f"[{p.node} {p.class_type}]"
        if p.value is not None and p.max:
            text += f" {p.value:g}/{p.max:g} ({100.0 * p.value / p.max:.0f}%)"
        else:
            text += " running"
        if text == self.last:
            return
        self.last = text
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")


def check_args(args: argparse.Namespace) -> None:
    """--server, --timeout, the workflow path and the output locations, before anything is sent."""
    import math
    from urllib.parse import urlsplit

    from ..validation import check_output_file, check_output_folder

    u = urlsplit(args.server)
    if u.scheme not in ("http", "https") or not u.netloc or not u.hostname:
        raise ComfyUsageError(f"--server {args.server!r} is not a URL: give the ComfyUI address, e.g. "
                              "http://127.0.0.1:8188")
    try:
        u.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ComfyUsageError(f"--server {args.server!r} has an invalid port: e.g. http://127.0.0.1:8188") from None
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise ComfyUsageError(f"--timeout must be a number of seconds > 0, got {args.timeout}")
    if Path(args.workflow).is_dir():
        raise ComfyUsageError(f"workflow {args.workflow} is a folder: give an API-format workflow JSON file, e.g. "
                              "workflows/api/toy_tmd.json")
    if args.out:
        check_output_folder("--out", args.out, error=ComfyUsageError)
    if args.json:
        check_output_file("--json", args.json, force=True, error=ComfyUsageError)


def run(args: argparse.Namespace) -> int:
    try:
        check_args(args)
        prompt = load_workflow(args.workflow)
        prompt = apply_overrides(prompt, [parse_override(s) for s in args.set])
    except ComfyUsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    client = ComfyClient(args.server)
    printer = _ProgressPrinter()
    try:
        entry = client.run(prompt, on_progress=printer, timeout=args.timeout)
    finally:
        printer.close()
    files = output_files(entry)
    summary = {"server": client.base_url, "outputs": files}
    if args.out:
        summary["downloaded"] = [str(p) for p in client.download(files, args.out)]
        print(f"done: {len(files)} output file(s) written to {args.out}")
    else:
        print(f"done: {len(files)} output file(s) on the server (pass --out DIR to download them)")
        for f in files:
            print(
                f"  node {f['node']}: {f['type']}/{f['subfolder'] + '/' if f['subfolder'] else ''}{f['filename']}"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "comfy-run",
        help="queue a workflow on a running ComfyUI and fetch its outputs",
        description="Queue an API-format workflow (workflows/api/*.json or ComfyUI's Export (API)) on a running "
        "ComfyUI server, show progress, report validation/execution errors, download the outputs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("workflow", help="API-format workflow JSON")
    p.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI base URL (default %(default)s)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="override an input (repeatable)",
    )
    p.add_argument("--out", metavar="DIR", help="download the output files into DIR")
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="S",
        help="give up after S seconds (default %(default)g)",
    )
    p.add_argument("--json", metavar="FILE", help="also write a JSON summary (outputs, downloaded paths)")
    p.set_defaults(func=run)
