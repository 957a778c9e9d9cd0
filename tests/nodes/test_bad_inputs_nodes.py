"""The nodes' rows of the bad-input table (tests/bad_inputs.py, docs/errors.md): each is refused with an error
naming the widget or input, before any model is loaded or sampled."""

import shutil

import pytest
from bad_inputs import CASES, build_world
from test_bad_inputs import record

from tmd_core.errors import TMDError

NODE_CASES = [c for c in CASES if c.surface == "node"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("bad_nodes"))


@pytest.mark.parametrize("case", NODE_CASES, ids=[c.id for c in NODE_CASES])
def test_bad_node_input_is_answered_by_name(case, world, nodes, host, tmd_file, teacher_file, toy_assets):
    for name in ("head99", "broken_cfg", "patch", "patch_nocfg"):
        shutil.copy(getattr(world, name), host.models_dir / "tmd" / f"{name}.safetensors")
    with pytest.raises(Exception) as e:
        case.run(world, nodes)
    # the pack's copy of tmd_core (comfyui_tmd.tmd_core) has its own classes: match TMDError by name and bases
    assert any(cls.__name__ == TMDError.__name__ for cls in type(e.value).__mro__), repr(e.value)
    message = str(e.value)
    for fragment in case.expect:
        assert fragment in message, message
    assert not (host.output_dir / "tmd_runs").exists() or not any((host.output_dir / "tmd_runs").iterdir())
    record(case, message, host.models_dir.parent)
