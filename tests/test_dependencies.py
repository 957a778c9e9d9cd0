"""The installed diffusers is inside the range the code was tested with (pyproject.toml, requirements.txt).

tmd_core re-implements parts of `WanTransformer3DModel.forward` (tmd_core/model.py: rope, patch, text and time
embeddings, the output layer) and calls `_gradient_checkpointing_func`, so a diffusers outside the tested range
may change them without an error.
"""

import re
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def declared(name: str) -> Requirement:
    """The requirement on `name` in pyproject.toml's dependencies (a quoted string; tomllib needs Python 3.11)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = [Requirement(d) for d in re.findall(rf'"({re.escape(name)}\s*[<>=!~\[;][^"]*)"', text)]
    assert len(found) == 1, f"pyproject.toml should declare {name} once, found {found}"
    return found[0]


def test_diffusers_has_a_tested_range_with_an_upper_bound():
    spec = declared("diffusers").specifier
    assert {s.operator for s in spec} == {">=", "<"}, f"diffusers needs a lower and an upper bound, got {spec}"


def test_requirements_txt_declares_the_same_diffusers_range():
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    reqs = [Requirement(line) for line in lines if re.match(r"diffusers\b", line)]
    assert [r.specifier for r in reqs] == [declared("diffusers").specifier]


def test_installed_diffusers_is_in_the_tested_range():
    spec = declared("diffusers").specifier
    installed = version("diffusers")
    assert spec.contains(Version(installed), prereleases=True), (
        f"diffusers {installed} is installed, but tmd_core was tested with diffusers{spec} (pyproject.toml): "
        f"install a tested version (pip install 'diffusers{spec}'), or run the tests with this one and widen the range"
    )
