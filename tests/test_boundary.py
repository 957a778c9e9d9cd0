"""The boundary of docs/design.md §1: tmd_core/ never imports the ComfyUI host (comfy, comfy_api, folder_paths, latent_preview...)."""

import ast
from pathlib import Path

TMD_CORE = Path(__file__).resolve().parents[1] / "tmd_core"
HOST_MODULES = {
    "comfy",
    "comfy_api",
    "comfy_extras",
    "comfy_execution",
    "folder_paths",
    "latent_preview",
    "node_helpers",
    "nodes",
    "execution",
    "server",
}


def host_imports(source: str) -> list[str]:
    """Absolute imports of host modules in `source` (relative imports are the library's own)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)  # importlib.import_module("comfy...") / __import__("comfy...")
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        found += [n for n in names if n.split(".")[0] in HOST_MODULES]
    return found


def test_scanner_sees_every_import_form():
    src = "import comfy.utils\nfrom folder_paths import get_full_path\nimport importlib\nimportlib.import_module('latent_preview')\nfrom . import nodes\n"
    assert host_imports(src) == ["comfy.utils", "folder_paths", "latent_preview"]


def test_tmd_core_never_imports_the_host():
    files = sorted(TMD_CORE.rglob("*.py"))
    assert files, f"no python files under {TMD_CORE}"
    offenders = {
        str(f.relative_to(TMD_CORE.parent)): hits
        for f in files
        if (hits := host_imports(f.read_text(encoding="utf-8")))
    }
    assert offenders == {}, f"tmd_core must stay host-independent; move these imports to nodes/: {offenders}"


def toy_imports(source: str, module: str) -> list[str]:
    """Imports of tmd_core.toy in `source`, the text of `module` (dotted, e.g. "tmd_core.training.loop"):
    absolute ones and relative ones resolved against the module's package."""
    package = module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        else:
            continue
        found += [n for n in names if n == "tmd_core.toy" or n.startswith("tmd_core.toy.")]
    return found


def test_toy_import_scanner_resolves_relative_imports():
    src = "from ..toy.text import X\nfrom .. import toy\nimport tmd_core.toy.world\nfrom ..worlds import Y\nfrom . import data\n"
    assert toy_imports(src, "tmd_core.training.loop") == ["tmd_core.toy.text", "tmd_core.toy", "tmd_core.toy.world"]


def test_training_never_imports_the_toy_world():
    """No toy <-> training cycle: the toy world trains with tmd_core.training, so training asks tmd_core.worlds."""
    files = sorted((TMD_CORE / "training").rglob("*.py"))
    assert files, f"no python files under {TMD_CORE / 'training'}"
    offenders = {}
    for f in files:
        module = ".".join(f.relative_to(TMD_CORE.parent).with_suffix("").parts)
        if hits := toy_imports(f.read_text(encoding="utf-8"), module):
            offenders[str(f.relative_to(TMD_CORE.parent))] = hits
    assert offenders == {}, f"tmd_core/training must not import tmd_core/toy (use tmd_core.worlds): {offenders}"


def test_the_layers_form_a_stack():
    """The layers of README "Architecture" (scripts/architecture_diagram.py): every import goes to a lower layer."""
    import importlib.util

    script = TMD_CORE.parent / "scripts" / "architecture_diagram.py"
    spec = importlib.util.spec_from_file_location("architecture_diagram", script)
    diagram = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diagram)
    edges, members = diagram.layer_graph()
    assert set(members) == set(diagram.LAYERS)
    assert diagram.upward(edges, diagram.ranks(edges)) == [], "an import goes up or sideways: a cycle of layers"
