"""Runs the web extension's logic tests (node's built-in test runner) as part of the pytest suite."""

import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_web_logic_under_node_test_runner():
    here = Path(__file__).parent
    proc = subprocess.run(["node", "--test", str(here)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout
