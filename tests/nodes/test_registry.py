"""Every registered node keeps ComfyUI's V1 contract and the pack's rules (docs/design.md §8)."""

import pytest

SHIPPED = {"TMDModelLoader", "TMDSchedule", "TMDSampler", "TMDCheckpointInfo", "TMDDistill", "TMDToyTextEncode",
           "TMDToyEmptyLatent", "TMDToyDecode"}  # ids are frozen once shipped
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def registered(pack):
    return sorted(pack.NODE_CLASS_MAPPINGS.items())


def test_the_pack_registers_its_nodes_inside_the_host(pack):
    assert SHIPPED <= set(pack.NODE_CLASS_MAPPINGS)
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)
    assert pack.WEB_DIRECTORY == "./web"


def test_every_node_has_a_tmd_id_category_description_and_callable_function(pack, nodes):
    for node_id, cls in registered(pack):
        assert node_id.startswith("TMD"), node_id
        assert cls.CATEGORY.startswith("TMD/"), (node_id, cls.CATEGORY)
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 20, node_id
        assert callable(getattr(cls, cls.FUNCTION)), node_id
        n = len(cls.RETURN_TYPES)
        assert len(cls.RETURN_NAMES) == n and len(cls.OUTPUT_TOOLTIPS) == n, node_id
        assert all(t for t in cls.OUTPUT_TOOLTIPS), node_id


def test_every_input_has_a_tooltip_and_widgets_have_sane_ranges(pack, nodes):
    for node_id, cls in registered(pack):
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}, node_id
        for group in ("required", "optional"):
            for name, (kind, *rest) in spec.get(group, {}).items():
                opts = rest[0] if rest else {}
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
                if kind in ("INT", "FLOAT"):
                    assert opts["min"] <= opts["default"] <= opts["max"], f"{node_id}.{name}: {opts}"
                elif isinstance(kind, list) and "default" in opts:
                    assert opts["default"] in kind, f"{node_id}.{name}: default not among the choices"
                elif not isinstance(kind, list):
                    assert kind not in WIDGET_TYPES or "default" in opts, f"{node_id}.{name} needs a default"


@pytest.mark.parametrize("node_id", sorted(SHIPPED))
def test_node_function_signature_accepts_every_declared_input(pack, nodes, node_id):
    import inspect

    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    spec = cls.INPUT_TYPES()
    for name in spec.get("required", {}):
        assert name in params and params[name].default is inspect.Parameter.empty, (node_id, name)
    for name in spec.get("optional", {}):
        assert name in params and params[name].default is None, (node_id, name)  # absent when unlinked
