"""Headless client of a running ComfyUI server: queue an API-format workflow, follow it, fetch its outputs.

Speaks ComfyUI's HTTP + websocket API (POST /prompt, /ws?clientId=, GET /history/{id}, GET /view;
see docs/host.md §8). Standard library + requests + websocket-client only; no ComfyUI import.
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .errors import TMDError


class ComfyUsageError(TMDError):
    """The workflow file or an override is not usable (the command line was wrong): exit code 2."""


class ComfyRunError(TMDError):
    """The server rejected the workflow, a node failed, the run timed out or the server is unreachable."""


# ---------------------------------------------------------------- workflow files and overrides


def workflow_format(obj: object) -> str:
    """'api' for `{id: {"class_type", "inputs"}}`, 'ui' for a saved/exported UI graph, else 'unknown'."""
    if isinstance(obj, dict) and isinstance(obj.get("nodes"), list) and "links" in obj:
        return "ui"
    if (
        isinstance(obj, dict)
        and obj
        and all(
            isinstance(v, dict) and "class_type" in v and isinstance(v.get("inputs", {}), dict)
            for v in obj.values()
        )
    ):
        return "api"
    return "unknown"


def load_workflow(path: str | os.PathLike) -> dict:
    """Reads an API-format workflow (also accepts `{"prompt": <API graph>}` as POSTed to /prompt).

    Raises:
        ComfyUsageError: the file is missing, not JSON, or a UI-format graph.
    """
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ComfyUsageError(f"workflow file not found: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ComfyUsageError(f"{p} is not a JSON workflow ({e})") from None
    if isinstance(obj, dict) and workflow_format(obj.get("prompt")) == "api":
        obj = obj["prompt"]
    kind = workflow_format(obj)
    if kind == "ui":
        raise ComfyUsageError(
            f"{p} is a UI-format workflow (it has 'nodes' and 'links'); the /prompt API needs the API format. "
            "Use the twin under workflows/api/, or in ComfyUI open the workflow and choose "
            "Workflow > Export (API)."
        )
    if kind != "api":
        raise ComfyUsageError(
            f"{p} is not an API-format workflow: expected an object of "
            '{"<node id>": {"class_type": ..., "inputs": {...}}}'
        )
    return obj


def parse_value(text: str):
    """JSON when it parses (`8`, `1.5`, `true`, `[1, 0]`, `"x"`), otherwise the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass(frozen=True)
class Override:
    node: str  # node id, unique class_type or unique _meta.title
    input: str  # input name of that node
    value: object  # new value (JSON-parsed when possible)


def parse_override(spec: str) -> Override:
    """`NODE.INPUT=VALUE` → Override. NODE may contain dots (titles); INPUT is after the last dot."""
    target, eq, raw = spec.partition("=")
    node, dot, name = target.rpartition(".")
    if not eq or not dot or not node.strip() or not name.strip():
        raise ComfyUsageError(
            f"bad --set {spec!r}: expected NODE.INPUT=VALUE, e.g. --set 3.seed=42 or --set TMDSchedule.outer_steps=2"
        )
    return Override(node.strip(), name.strip(), parse_value(raw))


def resolve_node(prompt: dict, ref: str) -> str:
    """Node id for `ref`: an id, else the one node of that class_type, else the one node with that title."""
    if ref in prompt:
        return ref
    by_class = [nid for nid, n in prompt.items() if n.get("class_type") == ref]
    by_title = [nid for nid, n in prompt.items() if (n.get("_meta") or {}).get("title") == ref]
    for hits in (by_class, by_title):
        if len(hits) == 1:
            return hits[0]
    for what, hits in (("class_type", by_class), ("title", by_title)):
        if len(hits) > 1:
            raise ComfyUsageError(
                f"--set node {ref!r} is ambiguous: {len(hits)} nodes have that {what} (ids {', '.join(sorted(hits))}); "
                "use the node id"
            )
    known = ", ".join(f"{nid} ({n.get('class_type')})" for nid, n in sorted(prompt.items()))
    raise ComfyUsageError(
        f"--set node {ref!r} not found: give a node id, class_type or title. Nodes: {known}"
    )


def apply_overrides(prompt: dict, overrides: Iterable[Override]) -> dict:
    """A copy of `prompt` with each override applied; only inputs the node already has can be set."""
    out = copy.deepcopy(prompt)
    for o in overrides:
        nid = resolve_node(out, o.node)
        inputs = out[nid].setdefault("inputs", {})
        if o.input not in inputs:
            raise ComfyUsageError(
                f"node {nid} ({out[nid].get('class_type')}) has no input {o.input!r}; "
                f"its inputs: {', '.join(sorted(inputs)) or '(none)'}"
            )
        inputs[o.input] = o.value
    return out


# ---------------------------------------------------------------- readable server errors


def _id_order(node_id: str):
    """Numeric ids in numeric order ('2' before '10'), then the rest (subgraph ids like '5:3')."""
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def format_validation_error(body: dict) -> str:
    """Text of a 400 answer of POST /prompt: the overall error, then one line per node error."""
    err = body.get("error") or {}
    if isinstance(err, str):  # very old servers
        err = {"message": err}
    lines = [f"ComfyUI rejected the workflow: {err.get('message', 'validation failed')}"]
    node_errors = body.get("node_errors") or {}
    for nid in sorted(node_errors, key=_id_order):
        ne = node_errors[nid]
        for e in ne.get("errors", []):
            info = e.get("extra_info") or {}
            where = f"node {nid} ({ne.get('class_type', '?')})"
            if info.get("input_name"):
                where += f" input {info['input_name']!r}"
            line = f"  {where}: {e.get('message', '')}"
            details = e.get("details")
            if details and details != info.get("input_name"):
                line += f" — {details}"
            elif "received_value" in info:
                line += f" (got {info['received_value']!r})"
            lines.append(line + f" [{e.get('type', 'error')}]")
    if not node_errors and err.get("details"):
        lines.append(f"  {err['details']}")
    return "\n".join(lines)


def format_execution_error(data: dict) -> str:
    """Text of an `execution_error` websocket message (also the same dict in /history status messages)."""
    where = f"node {data.get('node_id', '?')} ({data.get('node_type', '?')})"
    return f"{where} failed: {data.get('exception_type', 'Exception')}: {data.get('exception_message', '').strip()}"


def output_files(history_entry: dict) -> list[dict]:
    """Files a finished prompt produced: [{node, filename, subfolder, type}] from /history's `outputs`."""
    files = []
    outputs = history_entry.get("outputs") or {}
    for nid in sorted(outputs, key=_id_order):
        out = outputs[nid]
        for values in out.values():
            if not isinstance(values, list):
                continue
            for v in values:
                if isinstance(v, dict) and isinstance(v.get("filename"), str):
                    files.append(
                        {
                            "node": nid,
                            "filename": v["filename"],
                            "subfolder": v.get("subfolder", ""),
                            "type": v.get("type", "output"),
                        }
                    )
    return files


# ---------------------------------------------------------------- talking to the server


@dataclass
class Progress:
    node: str  # node id the event is about
    class_type: str  # its class_type from the workflow
    value: float | None = None  # progress value (None: the node just started)
    max: float | None = None


class ComfyClient:
    """One ComfyUI server. `run()` queues a prompt, follows it over the websocket and returns its history."""

    def __init__(self, base_url: str = "http://127.0.0.1:8188", request_timeout: float = 30.0):
        import requests  # deferred: only this client needs it

        self.base_url = base_url.rstrip("/")
        self.request_timeout = request_timeout
        self.session = requests.Session()
        self.client_id = uuid.uuid4().hex

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _ws_url(self) -> str:
        u = urlsplit(self.base_url)
        scheme = "wss" if u.scheme == "https" else "ws"
        return urlunsplit((scheme, u.netloc, u.path.rstrip("/") + "/ws", f"clientId={self.client_id}", ""))

    def _get(self, path: str, **params):
        import requests

        try:
            r = self.session.get(self._url(path), params=params or None, timeout=self.request_timeout)
        except requests.ConnectionError:
            raise ComfyRunError(
                f"cannot reach ComfyUI at {self.base_url}: is it running? (pass --server URL)"
            ) from None
        r.raise_for_status()
        return r

    def queue(self, prompt: dict) -> str:
        """POST /prompt; returns the prompt id. Raises ComfyRunError with readable node errors on 400."""
        import requests

        try:
            r = self.session.post(
                self._url("/prompt"),
                json={"prompt": prompt, "client_id": self.client_id},
                timeout=self.request_timeout,
            )
        except requests.ConnectionError:
            raise ComfyRunError(
                f"cannot reach ComfyUI at {self.base_url}: is it running? (pass --server URL)"
            ) from None
        if r.status_code == 400:
            try:
                body = r.json()
            except ValueError:
                body = {"error": {"message": r.text.strip()}}
            raise ComfyRunError(format_validation_error(body))
        r.raise_for_status()
        return r.json()["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self._get(f"/history/{prompt_id}").json().get(prompt_id)

    def run(
        self, prompt: dict, on_progress: Callable[[Progress], None] | None = None, timeout: float = 3600.0
    ) -> dict:
        """Queue `prompt`, wait until it finishes and return its /history entry.

        Raises:
            ComfyRunError: validation failed, a node raised, the run was interrupted, or `timeout` passed.
        """
        import websocket

        on_progress = on_progress or (lambda p: None)
        ws = websocket.WebSocket()
        try:  # connect before queueing so no event of this prompt is missed
            ws.connect(self._ws_url(), timeout=self.request_timeout)
        except (OSError, websocket.WebSocketException):
            raise ComfyRunError(
                f"cannot open the websocket of ComfyUI at {self.base_url}: is it running?"
            ) from None
        try:
            prompt_id = self.queue(prompt)
            self._follow(ws, prompt, prompt_id, on_progress, time.monotonic() + timeout)
        finally:
            ws.close()
        entry = self.history(prompt_id)
        status = (entry or {}).get("status") or {}
        if entry is None or status.get("status_str") == "error":
            for kind, data in status.get("messages", []):
                if kind == "execution_error":
                    raise ComfyRunError(format_execution_error(data))
            raise ComfyRunError(f"prompt {prompt_id} failed on the server (see the ComfyUI log)")
        return entry

    def _follow(self, ws, prompt: dict, prompt_id: str, on_progress, deadline: float) -> None:
        import websocket

        def class_of(nid):
            return (prompt.get(str(nid)) or {}).get("class_type", "?")

        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ComfyRunError(
                    f"prompt {prompt_id} did not finish within the timeout; it is still queued or running on the "
                    f"server (POST {self.base_url}/interrupt stops it)"
                )
            ws.settimeout(min(left, 5.0))
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                if self.history(prompt_id):  # the entry exists once the run ended: covers a missed message
                    return
                continue
            except websocket.WebSocketConnectionClosedException:
                raise ComfyRunError(
                    f"ComfyUI at {self.base_url} closed the connection (did the server stop?)"
                ) from None
            if not isinstance(raw, str):  # binary frames: latent previews
                continue
            msg = json.loads(raw)
            kind, data = msg.get("type"), msg.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if kind == "executing" and data.get("prompt_id") == prompt_id:
                if data.get("node") is None:  # sent after the history entry is stored
                    return
                on_progress(Progress(str(data["node"]), class_of(data["node"])))
            elif kind == "progress":
                on_progress(
                    Progress(
                        str(data.get("node")), class_of(data.get("node")), data.get("value"), data.get("max")
                    )
                )
            elif kind == "execution_error":
                raise ComfyRunError(format_execution_error(data))
            elif kind == "execution_interrupted":
                raise ComfyRunError(
                    f"prompt {prompt_id} was interrupted at node {data.get('node_id')} ({data.get('node_type')})"
                )

    def download(self, files: list[dict], out_dir: str | os.PathLike) -> list[Path]:
        """GET /view for each output file into `out_dir/<subfolder>/<filename>`; returns the written paths."""
        out_dir = Path(out_dir)
        written = []
        for f in files:
            name = Path(f["filename"]).name
            sub = Path(*[p for p in Path(f.get("subfolder") or "").parts if p not in ("..", "/")])
            dest = out_dir / sub / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            r = self._get(
                "/view",
                filename=f["filename"],
                subfolder=f.get("subfolder", ""),
                type=f.get("type", "output"),
            )
            dest.write_bytes(r.content)
            written.append(dest)
        return written
