"""tmd_core.comfy_client: workflow files, --set overrides, readable server errors (no server needed).

The server answers below were recorded from a real ComfyUI 0.3.64 (`POST /prompt` 400 body, an
`execution_error` websocket message, a `/history` entry); the full flow against the real host is in
tests/integration/test_comfy_run.py.
"""

import json

import pytest

from tmd_core.cli import main
from tmd_core.comfy_client import (
    ComfyUsageError,
    apply_overrides,
    format_execution_error,
    format_validation_error,
    load_workflow,
    output_files,
    parse_override,
    resolve_node,
    workflow_format,
)

PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {
        "class_type": "ImageToMask",
        "inputs": {"image": ["1", 0], "channel": "red"},
        "_meta": {"title": "To mask"},
    },
    "3": {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "a"},
        "_meta": {"title": "Save"},
    },
    "10": {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "b"},
        "_meta": {"title": "Save.v2"},
    },
}

# POST /prompt answer (status 400) of ComfyUI 0.3.64 for a graph with three invalid nodes
BODY_400 = {
    "error": {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "Required input is missing: images",
        "extra_info": {},
    },
    "node_errors": {
        "5": {
            "errors": [
                {
                    "type": "required_input_missing",
                    "message": "Required input is missing",
                    "details": "images",
                    "extra_info": {"input_name": "images"},
                }
            ],
            "dependent_outputs": ["5", "4"],
            "class_type": "SaveImage",
        },
        "10": {
            "errors": [
                {
                    "type": "value_smaller_than_min",
                    "message": "Value 0 smaller than min of 1",
                    "details": "width",
                    "extra_info": {
                        "input_name": "width",
                        "input_config": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
                        "received_value": 0,
                    },
                }
            ],
            "dependent_outputs": ["4"],
            "class_type": "EmptyImage",
        },
        "2": {
            "errors": [
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": "channel: 'purple' not in ['red', 'green', 'blue', 'alpha']",
                    "extra_info": {
                        "input_name": "channel",
                        "input_config": [["red", "green", "blue", "alpha"], {}],
                        "received_value": "purple",
                    },
                }
            ],
            "dependent_outputs": ["4"],
            "class_type": "ImageToMask",
        },
    },
}

# `data` of the `execution_error` websocket message (traceback and inputs shortened)
EXECUTION_ERROR = {
    "prompt_id": "6db1703b-14d8-4081-8123-99dbba826d84",
    "node_id": "2",
    "node_type": "ImageToMask",
    "executed": ["1"],
    "exception_message": "index 3 is out of bounds for dimension 3 with size 3\n",
    "exception_type": "IndexError",
    "traceback": ['  File "/opt/ComfyUI/comfy_extras/nodes_mask.py", line 137, in image_to_mask\n'],
    "current_inputs": {"channel": ["alpha"]},
    "current_outputs": ["1", "3", "4", "2"],
}


def test_workflow_format_tells_api_from_ui():
    assert workflow_format(PROMPT) == "api"
    assert workflow_format({"last_node_id": 4, "nodes": [], "links": [], "version": 0.4}) == "ui"
    assert workflow_format({}) == "unknown"
    assert workflow_format({"1": {"inputs": {}}}) == "unknown"  # no class_type
    assert workflow_format([PROMPT]) == "unknown"


def test_load_workflow_rejects_ui_format_with_a_pointer_to_the_api_twin(tmp_path):
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"last_node_id": 1, "nodes": [{"id": 1, "type": "TMDSampler"}], "links": []}))
    with pytest.raises(ComfyUsageError, match=r"UI-format.*workflows/api/.*Export \(API\)"):
        load_workflow(ui)
    api = tmp_path / "api.json"
    api.write_text(json.dumps({"prompt": PROMPT}))  # the /prompt request body is accepted too
    assert load_workflow(api) == PROMPT
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ComfyUsageError, match="not a JSON workflow"):
        load_workflow(tmp_path / "bad.json")
    with pytest.raises(ComfyUsageError, match="not found"):
        load_workflow(tmp_path / "missing.json")


def test_parse_override_values_are_json_when_possible():
    assert parse_override("3.seed=42").value == 42
    assert parse_override("3.cfg=1.5").value == 1.5
    assert parse_override("3.flag=true").value is True
    assert parse_override('3.model=["4", 0]').value == ["4", 0]
    assert parse_override("3.text=a red square = fast").value == "a red square = fast"
    o = parse_override("Save.v2.filename_prefix=x")  # a title with a dot: INPUT is after the last dot
    assert (o.node, o.input, o.value) == ("Save.v2", "filename_prefix", "x")
    for bad in ["seed=1", "3.seed", ".seed=1", "3.=1"]:
        with pytest.raises(ComfyUsageError, match="NODE.INPUT=VALUE"):
            parse_override(bad)


def test_resolve_node_by_id_class_type_and_title():
    assert resolve_node(PROMPT, "10") == "10"
    assert resolve_node(PROMPT, "EmptyImage") == "1"
    assert resolve_node(PROMPT, "To mask") == "2"
    assert resolve_node(PROMPT, "Save.v2") == "10"
    with pytest.raises(ComfyUsageError, match=r"ambiguous: 2 nodes have that class_type \(ids 10, 3\)"):
        resolve_node(PROMPT, "SaveImage")
    with pytest.raises(ComfyUsageError, match=r"not found.*1 \(EmptyImage\)"):
        resolve_node(PROMPT, "KSampler")


def test_apply_overrides_copies_and_rejects_unknown_inputs():
    out = apply_overrides(
        PROMPT, [parse_override("EmptyImage.width=128"), parse_override("Save.filename_prefix=z")]
    )
    assert out["1"]["inputs"]["width"] == 128 and out["3"]["inputs"]["filename_prefix"] == "z"
    assert PROMPT["1"]["inputs"]["width"] == 64  # the input graph is untouched
    with pytest.raises(
        ComfyUsageError, match=r"node 1 \(EmptyImage\) has no input 'widht'; its inputs: batch_size, color"
    ):
        apply_overrides(PROMPT, [parse_override("1.widht=3")])


def test_format_validation_error_lists_each_node_input_and_message():
    text = format_validation_error(BODY_400)
    lines = text.splitlines()
    assert lines[0] == "ComfyUI rejected the workflow: Prompt outputs failed validation"
    # numeric id order, one line per error, with class_type, input name, message and type
    assert [ln.split(" (")[0].strip() for ln in lines[1:]] == ["node 2", "node 5", "node 10"]
    assert (
        "node 10 (EmptyImage) input 'width': Value 0 smaller than min of 1 (got 0) [value_smaller_than_min]"
        in text
    )
    assert "node 2 (ImageToMask) input 'channel': Value not in list — channel: 'purple' not in" in text
    assert "node 5 (SaveImage) input 'images': Required input is missing [required_input_missing]" in text


def test_format_validation_error_without_node_errors_shows_details():
    body = {
        "error": {
            "type": "prompt_no_outputs",
            "message": "Prompt has no outputs",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {},
    }
    assert format_validation_error(body) == "ComfyUI rejected the workflow: Prompt has no outputs"
    body = {
        "error": {
            "type": "invalid_prompt",
            "message": "Cannot execute because node Foo does not exist.",
            "details": "Node ID '#3'",
        },
        "node_errors": {},
    }
    assert format_validation_error(body).splitlines()[1] == "  Node ID '#3'"


def test_format_execution_error_names_node_and_exception():
    assert format_execution_error(EXECUTION_ERROR) == (
        "node 2 (ImageToMask) failed: IndexError: index 3 is out of bounds for dimension 3 with size 3"
    )


def test_output_files_collects_every_file_entry():
    entry = {
        "outputs": {
            "9": {
                "images": [{"filename": "v_00001_.mp4", "subfolder": "video", "type": "output"}],
                "animated": [True],
            },
            "4": {"images": [{"filename": "a.png", "subfolder": "", "type": "temp"}], "text": ["not a file"]},
        },
        "status": {"status_str": "success", "completed": True, "messages": []},
    }
    assert output_files(entry) == [
        {"node": "4", "filename": "a.png", "subfolder": "", "type": "temp"},
        {"node": "9", "filename": "v_00001_.mp4", "subfolder": "video", "type": "output"},
    ]


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    assert main(["comfy-run", str(ui)]) == 2
    assert "Export (API)" in capsys.readouterr().err
    api = tmp_path / "api.json"
    api.write_text(json.dumps(PROMPT))
    assert main(["comfy-run", str(api), "--set", "KSampler.seed=1"]) == 2
    assert "--set node 'KSampler' not found" in capsys.readouterr().err


def test_cli_unreachable_server_exits_1_with_a_hint(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = tmp_path / "api.json"
    api.write_text(json.dumps(PROMPT))
    assert main(["comfy-run", str(api), "--server", f"http://127.0.0.1:{port}", "--timeout", "5"]) == 1
    assert f"ComfyUI at http://127.0.0.1:{port}: is it running?" in capsys.readouterr().err
