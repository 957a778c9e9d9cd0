"""Every registered node keeps ComfyUI's V3 schema contract and the pack's rules (docs/design.md §8)."""

import asyncio
import inspect

import pytest
from comfy_fakes import MODULES

SHIPPED = {"TMDModelLoader", "TMDSchedule", "TMDSampler", "TMDCheckpointInfo", "TMDDistill", "TMDToyTextEncode",
           "TMDToyEmptyLatent", "TMDToyDecode", "TMDApplyToModel"}  # ids are frozen once shipped
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def registered(pack) -> dict:
    """node id -> class, as ComfyUI 0.3.64's nodes.py registers a pack with `comfy_entrypoint` (V3)."""
    extension = asyncio.run(pack.comfy_entrypoint())
    assert isinstance(extension, MODULES["comfy_api.latest"].ComfyExtension)
    classes = asyncio.run(extension.get_node_list())
    return {cls.GET_SCHEMA().node_id: cls for cls in classes}


def test_the_pack_registers_its_nodes_through_the_v3_entrypoint_only(pack, nodes):
    assert set(registered(pack)) == SHIPPED
    # ComfyUI reads NODE_CLASS_MAPPINGS first and would then ignore comfy_entrypoint
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS") and not hasattr(pack, "NODE_DISPLAY_NAME_MAPPINGS")
    assert pack.WEB_DIRECTORY == "./web"


def test_every_node_is_a_v3_node_with_a_tmd_id_display_name_category_and_description(pack, nodes):
    io = MODULES["comfy_api.latest._io"]
    for node_id, cls in registered(pack).items():
        schema = cls.GET_SCHEMA()
        assert issubclass(cls, io.ComfyNode) and cls.__name__ == node_id, node_id
        assert node_id.startswith("TMD") and schema.display_name.startswith("TMD "), node_id
        assert schema.category.startswith("TMD/"), (node_id, schema.category)
        assert isinstance(schema.description, str) and len(schema.description) > 20, node_id
        info = cls.GET_NODE_INFO_V1()
        assert len(info["output_name"]) == len(info["output"]) == len(info["output_tooltips"]), node_id
        assert all(info["output_tooltips"]) and all(n != t for n, t in zip(info["output_name"], info["output"])), node_id


def test_every_input_has_a_tooltip_and_widgets_have_sane_ranges(pack, nodes):
    for node_id, cls in registered(pack).items():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}, node_id
        for group in ("required", "optional"):
            for name, (kind, opts) in spec.get(group, {}).items():
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
                if kind in ("INT", "FLOAT"):
                    assert opts["min"] <= opts["default"] <= opts["max"], f"{node_id}.{name}: {opts}"
                elif kind == "COMBO" and "default" in opts:
                    assert opts["default"] in opts["options"], f"{node_id}.{name}: default not among the choices"
                else:
                    assert kind not in WIDGET_TYPES or "default" in opts, f"{node_id}.{name} needs a default"


@pytest.mark.parametrize("node_id", sorted(SHIPPED))
def test_execute_accepts_every_declared_input_by_name(pack, nodes, node_id):
    cls = registered(pack)[node_id]
    params = inspect.signature(cls.execute).parameters
    spec = cls.INPUT_TYPES(include_hidden=False)
    assert set(params) == set(spec["required"]) | set(spec.get("optional", {})), node_id  # hidden: cls.hidden
    for name in spec["required"]:
        assert params[name].default is inspect.Parameter.empty, (node_id, name)
    for name in spec.get("optional", {}):
        assert params[name].default is None, (node_id, name)  # absent when unlinked


@pytest.mark.parametrize("node_id", sorted(SHIPPED))
def test_every_menu_is_checked_when_the_prompt_is_posted(pack, nodes, node_id):
    # ComfyUI 0.3.64 checks V1 combos at POST /prompt but not V3 ones: each node's validate_inputs does,
    # and names only its combos (a named input skips the host's own min/max checks)
    cls = registered(pack)[node_id]
    spec = cls.INPUT_TYPES()
    menus = {name: opts["options"] for group in ("required", "optional") for name, (kind, opts) in spec.get(group, {}).items()
             if kind == "COMBO"}
    if not menus:
        assert "validate_inputs" not in cls.__dict__, node_id
        return
    assert set(inspect.signature(cls.validate_inputs).parameters) == set(menus), node_id
    unset = dict.fromkeys(menus)
    assert cls.validate_inputs(**unset) is True  # linked or absent: nothing to check
    for name, options in menus.items():
        message = cls.validate_inputs(**{**unset, name: "no such choice"})
        assert message == f"{name}: 'no such choice' not in {options}", message  # ComfyUI's V1 wording
        if options:
            assert cls.validate_inputs(**{**unset, name: options[-1]}) is True


def test_a_comfyui_without_the_v3_schema_gets_an_import_error_naming_the_version(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "comfy").mkdir()
    (tmp_path / "comfy" / "__init__.py").write_text("")
    (tmp_path / "folder_paths.py").write_text("")  # a ComfyUI before 0.3.48: no comfy_api
    repo = Path(__file__).resolve().parents[2]
    code = ("import importlib.util as u, sys\n"
            f"s = u.spec_from_file_location('pack', {str(repo / '__init__.py')!r}, submodule_search_locations=[])\n"
            "m = u.module_from_spec(s); sys.modules['pack'] = m; s.loader.exec_module(m)")  # fmt: skip
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)},
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 1
    assert "ImportError: the TMD nodes need ComfyUI 0.3.64 or later (V3 node schema, comfy_api.latest)" in p.stderr
