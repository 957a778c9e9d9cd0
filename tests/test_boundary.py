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
