"""Run one benchmark case in a fresh process (its own peak RSS) and read the JSON it prints after a marker."""

from __future__ import annotations

import json
import subprocess
import sys


def child_result(cmd: list[str], env: dict, marker: str, what: str) -> dict:
    """Run `cmd` with `env`; return the JSON after `marker` on its last such stdout line.

    A failed child (non-zero exit or no result line) prints the tail of its stderr and ends the benchmark
    with SystemExit naming `what`."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(marker)]
    if proc.returncode or not lines:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{what} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len(marker):])
