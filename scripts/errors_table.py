"""Render docs/errors.md from the bad-input table (tests/bad_inputs.py): runs its tests, collects each message.

    .venv/bin/python scripts/errors_table.py        # rewrites docs/errors.md (about half a minute)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_bad_inputs.py", "tests/nodes/test_bad_inputs_nodes.py"]
SURFACES = {"cli": "Command line", "config": "Training config (`tmd distill`, `--dry-run` gives the same answer)",
            "api": "Library (Python API)", "node": "ComfyUI nodes"}

HEAD = """# Errors: every bad input and its answer

Every input a user can give is checked before anything heavy is loaded or sampled, by one validation layer
(`tmd_core/validation.py`, plus the header-only readers `describe_checkpoint` and `read_tmd_info`). The command
line, the library, the ComfyUI nodes and the training config all use it; `tmd distill --dry-run` and
`tmd generate --dry-run` run exactly it. A message names the input as the user spelled it, says what it accepts,
and what to do.

- **Command line**: one line `error: <message>` on stderr and exit code 1 (2 for usage errors of argparse and
  `tmd comfy-run`); no traceback. `tmd --debug VERB ...` prints the traceback as well. An unexpected exception
  (a bug) also ends in one line, which asks to rerun with `--debug` and report it; an operating-system error
  (disk full, permission denied) names the file.
- **Library**: a subclass of `tmd_core.TMDError` (`InputError`, `ConfigError`, `CheckpointError`,
  `CheckpointNotFoundError`, `NonFiniteError`), also a `ValueError` (or `ArithmeticError`/`FileNotFoundError`).
- **ComfyUI**: the same exception, shown by ComfyUI as the node's error.

Also answered (not rows of the table, because they are not refused):

- **Non-finite results.** The samplers check the sample after every transition or step. NaN or inf raises
  `NonFiniteError` naming where it appeared (e.g. "in transition 1 of 2 (t = 0.999 -> 0.9091, backbone + flow
  head)") and the likely cause: a non-finite input, else the first weight holding NaN/inf (a corrupt checkpoint
  or a diverged run), else "a weight is out of range or the dtype overflowed". Nothing is saved; the exit code
  is 1.
- **Step counts.** An explicit 0 is an error, never "use the default"; leaving the flag out uses the default.
- **Seeds.** User-facing seeds (`--seed`, the nodes' `seed`) accept 0 to 2**32-1. torch's CPU generator uses
  32 bits of a seed, so 2**32, 2**63 or 2**64 would silently repeat the noise of a smaller seed: they are
  refused, not aliased. The library's `make_noise` refuses seeds outside 0 to 2**64-1.
- **Output files** are never replaced without `--force` (`tmd generate`, `tmd demo`), written atomically
  (a temporary file in the same folder, then a rename), and a missing output folder is created. `tmd distill`
  refuses an `output_dir` that holds a run unless `--resume`, and `--resume` with nothing to resume says so.
- **Failed starts** leave nothing that blocks running the same command again: a run that fails before its
  first saved state removes the files it created; temporaries left by a process killed during a write
  (`.<name>.<random>.tmp`) are removed when the next run starts in that folder.

The table is rendered by `python scripts/errors_table.py` from `tests/bad_inputs.py`, whose rows the tests
check (each message must contain the fragments listed there, and no traceback may be printed); `…` stands for
the test's temporary folder.
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "table.jsonl"
        env = {**os.environ, "TMD_ERRORS_TABLE": str(table)}
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS, "-k",
                              "answered"], cwd=REPO, env=env)
        if rc:
            print("the bad-input tests failed: docs/errors.md not written", file=sys.stderr)
            return rc
        rows = [json.loads(line) for line in table.read_text(encoding="utf-8").splitlines()]
    order = {case_id: i for i, case_id in enumerate(_case_ids())}
    rows.sort(key=lambda r: order[r["id"]])
    out = [HEAD, f"{len(rows)} bad inputs.\n"]
    for surface, title in SURFACES.items():
        group = [r for r in rows if r["surface"] == surface]
        out += [f"\n## {title} ({len(group)})\n", "| case | input | message |", "|---|---|---|"]
        for r in group:
            message = r["message"].replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{r['id']}` | {r['input'].replace('|', '/')} | {message} |")
    (REPO / "docs" / "errors.md").write_text("\n".join(out) + "\n", encoding="utf-8")
    print(f"wrote docs/errors.md: {len(rows)} rows")
    return 0


def _case_ids() -> list[str]:
    sys.path[:0] = [str(REPO / "tests")]
    from bad_inputs import CASES

    return [c.id for c in CASES]


if __name__ == "__main__":
    sys.exit(main())
