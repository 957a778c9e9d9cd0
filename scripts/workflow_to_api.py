#!/usr/bin/env python3
"""Convert a UI-format ComfyUI workflow (what the frontend saves) to the API format (what /prompt takes).

ComfyUI's server has no such converter (only the frontend has, "Export (API)"), so the pack ships
both forms of each bundled workflow; this script regenerates a twin and the tests use it to check
that the two stay equivalent. It follows the frontend's rules (ComfyUI frontend 1.27):
  - a node's widget values are listed in the order of its required then optional inputs that are
    widgets (INT, FLOAT, STRING, BOOLEAN, combos), skipping `forceInput` ones;
  - an input with `control_after_generate` (or named seed / noise_seed) has one extra value after
    it in widgets_values ("fixed", "randomize", ...), which is not sent to the server;
  - a link fills an input as [source node id, output slot]; unlinked optional inputs are left out;
  - `_meta.title` is the node's title, or its display name.
Muted/bypassed nodes and frontend-only nodes (notes, reroutes, primitives) are not supported.

usage: scripts/workflow_to_api.py UI.json --object-info OBJECT_INFO.json|URL [--object-info ...] [-o API.json]
  OBJECT_INFO  a saved GET /object_info answer, or a server URL (http://127.0.0.1:8188) to ask.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = ("seed", "noise_seed")


class WorkflowError(ValueError):
    """The UI workflow does not fit the node definitions (unknown node, wrong number of widget values...)."""


def input_specs(node_def: dict) -> list[tuple[str, str, list | str, dict]]:
    """[(name, group, type, options)] of a node's required then optional inputs, in declaration order."""
    inputs = node_def.get("input", {})
    order = node_def.get("input_order") or {g: list(inputs.get(g, {})) for g in ("required", "optional")}
    out = []
    for group in ("required", "optional"):
        for name in order.get(group, []):
            spec = inputs[group][name]
            out.append((name, group, spec[0], spec[1] if len(spec) > 1 else {}))
    return out


def is_widget(kind, opts: dict) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def has_control_value(name: str, opts: dict) -> bool:
    return bool(opts.get("control_after_generate")) or name in SEED_NAMES


def widget_inputs(node: dict, node_def: dict) -> dict:
    """{input name: value} from a UI node's widgets_values."""
    values = list(node.get("widgets_values") or [])
    if isinstance(node.get("widgets_values"), dict):
        raise WorkflowError(
            f"node {node['id']} ({node['type']}): dict-style widgets_values are not supported"
        )
    out, i = {}, 0
    for name, _group, kind, opts in input_specs(node_def):
        if not is_widget(kind, opts):
            continue
        if i >= len(values):
            raise WorkflowError(f"node {node['id']} ({node['type']}): no widget value for input {name!r}")
        out[name] = values[i]
        i += 2 if has_control_value(name, opts) else 1
    if i != len(values):
        raise WorkflowError(
            f"node {node['id']} ({node['type']}): {len(values)} widget values, its inputs take {i}: {values}"
        )
    return out


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """The API graph `{id: {"class_type", "inputs", "_meta": {"title"}}}` of a UI-format workflow."""
    links = {
        link[0]: link for link in ui.get("links", [])
    }  # [id, from node, from slot, to node, to slot, type]
    prompt = {}
    for node in sorted(ui["nodes"], key=lambda n: n["id"]):
        kind = node["type"]
        if kind not in object_info:
            raise WorkflowError(f"node {node['id']}: type {kind!r} is not a registered node")
        if node.get("mode", 0) != 0:
            raise WorkflowError(f"node {node['id']} ({kind}): muted/bypassed nodes are not supported")
        node_def = object_info[kind]
        inputs = widget_inputs(node, node_def)
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            link = links.get(slot["link"])
            if link is None or link[3] != node["id"]:
                raise WorkflowError(f"node {node['id']} ({kind}): input {slot['name']!r} has a dangling link")
            inputs[slot["name"]] = [str(link[1]), link[2]]
        title = node.get("title") or node_def.get("display_name") or kind
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}
    return prompt


def load_object_info(source: str) -> dict:
    if source.startswith(("http://", "https://")):
        import requests

        r = requests.get(source.rstrip("/") + "/object_info", timeout=60)
        r.raise_for_status()
        return r.json()
    return json.loads(Path(source).read_text(encoding="utf-8"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workflow", help="UI-format workflow JSON")
    p.add_argument("--object-info", action="append", required=True, metavar="FILE|URL",
                   help="node definitions (repeatable; later ones add to earlier ones)")  # fmt: skip
    p.add_argument("-o", "--out", help="write here instead of stdout")
    args = p.parse_args(argv)
    object_info = {}
    for source in args.object_info:
        object_info.update(load_object_info(source))
    try:
        api = ui_to_api(json.loads(Path(args.workflow).read_text(encoding="utf-8")), object_info)
    except WorkflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = json.dumps(api, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
