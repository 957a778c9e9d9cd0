"""Every bad input of the table (tests/bad_inputs.py, docs/errors.md) is answered before any work starts: one
`error:` line naming the input, a non-zero exit code, no traceback (`--debug` adds it), nothing written."""

import json
import os
import sys

import pytest
from bad_inputs import CASES, build_world

from tmd_core.cli import main
from tmd_core.errors import TMDError

RUN = [c for c in CASES if c.surface != "node"]


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("bad"))


def record(case, message: str, root) -> None:
    """Append the message to $TMD_ERRORS_TABLE (scripts/errors_table.py renders docs/errors.md from it)."""
    path = os.environ.get("TMD_ERRORS_TABLE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": case.id, "surface": case.surface, "input": case.input,
                                "message": message.replace(str(root), "…").replace(sys.executable, "<python>")})
                    + "\n")


@pytest.mark.parametrize("case", RUN, ids=[c.id for c in RUN])
def test_bad_input_is_answered_by_name_before_any_work(case, w, capsys):
    if case.surface in ("cli", "config"):
        rc = main(case.run(w))
        out = capsys.readouterr()
        assert rc in (1, 2), out
        assert "Traceback" not in out.err + out.out
        lines = [line for line in out.err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, out.err
        message = lines[0].removeprefix("error: ")
    else:
        with pytest.raises(TMDError) as e:
            case.run(w)
        message = str(e.value)
    for fragment in case.expect:
        assert fragment in message, message
    for made in ("out", "runs", "made", "demo", "quick", "nothing"):  # checks come before any output is made
        assert not (w.root / made).exists(), made
    record(case, message, w.root)


def test_the_table_covers_every_surface_and_at_least_sixty_inputs():
    surfaces = {c.surface for c in CASES}
    assert surfaces == {"cli", "config", "api", "node"}
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def test_debug_adds_the_traceback(w, capsys):
    argv = ["generate", str(w.student), "--context", str(w.ctx), "--outer-steps", "0"]
    assert main(argv) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("error: --outer-steps")


def test_docs_errors_lists_every_case():
    """docs/errors.md is rendered from this table (python scripts/errors_table.py): every input is in it."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"docs/errors.md lacks {missing}: run python scripts/errors_table.py"


CONFIG = [c for c in CASES if c.surface == "config"]


@pytest.mark.parametrize("case", CONFIG, ids=[c.id for c in CONFIG])
def test_the_real_run_refuses_what_the_dry_run_refuses_with_the_same_message(case, w, capsys):
    """`--dry-run` runs exactly the checks the real run makes first: no start it approves can fail on them."""
    dry = case.run(w)
    assert main(dry) == 1
    dry_message = capsys.readouterr().err.strip().splitlines()[-1]
    assert main([a for a in dry if a != "--dry-run"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err and out.err.strip().splitlines()[-1] == dry_message
    assert not (w.root / "runs").exists()
