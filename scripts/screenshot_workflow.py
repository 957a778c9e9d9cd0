#!/usr/bin/env python3
"""Load a workflow into the real ComfyUI frontend in headless Chromium, check its nodes, take a screenshot.

Drives Debian's chromium over the Chrome DevTools protocol (websocket-client, no browser automation
package): opens the frontend of a running ComfyUI, closes the dialogs a fresh profile gets (template
browser), loads the workflow with the frontend's own `app.loadGraphData`, closes the dialogs the load
opens (e.g. missing model files, reported), checks that every node type is known to the frontend, and
saves a PNG. Prints a JSON report; exit 0 when no node type is missing, 1 otherwise, 2 on set-up errors.

usage: scripts/screenshot_workflow.py [--server URL] [--workflow UI.json] [-o OUT.png] [--size WxH]
                                      [--timeout S] [--json REPORT.json]
needs: chromium (apt-get install chromium), websocket-client and requests (the pack's requirements).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# True once the frontend has finished booting (graph, canvas, node definitions from /object_info)
READY_JS = (
    "Boolean(window.app && app.graph && app.canvas && window.comfyAPI && document.querySelector('canvas'))"
)

# Closes every open PrimeVue dialog (template browser, missing models, ...) and returns their titles
CLOSE_DIALOGS_JS = """(() => {
  const titles = [];
  for (const d of document.querySelectorAll('.p-dialog')) {
    const head = d.querySelector('.p-dialog-title, .p-dialog-header');
    titles.push(((head && head.innerText) || d.innerText || '').trim().split('\\n')[0].slice(0, 120));
    const close = d.querySelector('.p-dialog-close-button, .p-dialog-header-close, button[aria-label="Close"]');
    if (close) close.click();
  }
  return titles;
})()"""

# Loads the workflow as the frontend does for a dropped file; reports what the frontend made of it
LOAD_JS = """(async (wf, name) => {
  const known = (t) => !!(window.LiteGraph ? LiteGraph.registered_node_types[t] : null);
  await app.loadGraphData(wf, true, true, name);
  await new Promise((r) => setTimeout(r, 300));
  const nodes = app.graph.nodes;
  return {
    frontend_version: window.__COMFYUI_FRONTEND_VERSION__ || null,
    nodes: nodes.length,
    links: Object.keys(app.graph.links instanceof Map ? Object.fromEntries(app.graph.links) : app.graph.links).length,
    widgets_values: Object.fromEntries(nodes.map((n) => [n.id, (n.widgets ?? []).map((w) => w.value)])),
    missing_node_types: [...new Set(nodes.filter((n) => n.has_errors || !n.comfyClass || (window.LiteGraph && !known(n.type))).map((n) => n.type))],
  };
})"""

# What the pack's web extension drew on its nodes (web/tmd.js sets node.tmdSummary while drawing)
SUMMARY_JS = """(() => {
  app.graph.setDirtyCanvas(true, true);
  app.canvas.draw(true, true);
  const out = {};
  for (const n of app.graph.nodes) if (n.tmdSummary) out[`${n.id} ${n.type}`] = n.tmdSummary.text;
  return out;
})()"""


class Page:
    """One Chromium tab over CDP: send(method, **params) -> result; eval(js) -> value."""

    def __init__(self, ws_url: str, timeout: float):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.next_id = 0

    def send(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expression: str):
        r = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page error: {json.dumps(r['exceptionDetails'])[:800]}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not self.eval(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the frontend did not get {what} within {timeout:g} s")
            time.sleep(0.25)

    def close(self):
        self.ws.close()


def start_chromium(profile: Path, size: str, timeout: float) -> tuple[subprocess.Popen, str]:
    """Headless Chromium with a fresh profile; returns (process, websocket URL of its first tab)."""
    import requests

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise FileNotFoundError("chromium not found: apt-get update && apt-get install -y chromium")
    w, h = size.lower().split("x")
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--no-first-run", "--hide-scrollbars", "--remote-allow-origins=*",
           f"--user-data-dir={profile}", f"--window-size={w},{h}", "--remote-debugging-port=0", "about:blank"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(profile / "chromium.log", "wb"))
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while not (port_file.is_file() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("chromium did not start: " + (profile / "chromium.log").read_text()[-2000:])
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    tabs = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
    return proc, next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")


def screenshot_workflow(
    server: str, workflow: Path, out: Path, size: str = "1600x1000", timeout: float = 90.0
) -> dict:
    """Load `workflow` into the frontend at `server`, save a PNG at `out`; returns the report."""
    wf = json.loads(workflow.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="tmd_chromium.") as tmp:
        proc, ws_url = start_chromium(Path(tmp), size, timeout)
        page = Page(ws_url, timeout)
        try:
            page.send("Page.enable")
            w, h = (int(v) for v in size.lower().split("x"))  # the viewport, not the window with its frame
            page.send(
                "Emulation.setDeviceMetricsOverride", width=w, height=h, deviceScaleFactor=1, mobile=False
            )
            page.send("Page.navigate", url=server.rstrip("/") + "/")
            page.wait_for(READY_JS, timeout, "ready")
            time.sleep(2.0)  # a fresh profile opens the template browser shortly after boot
            closed_at_start = page.eval(CLOSE_DIALOGS_JS)
            report = page.eval(f"{LOAD_JS}({json.dumps(wf)}, {json.dumps(workflow.stem)})")
            time.sleep(1.0)
            report["dialogs_after_load"] = page.eval(CLOSE_DIALOGS_JS)
            report["dialogs_at_start"] = closed_at_start
            time.sleep(0.5)
            report["tmd_summaries"] = page.eval(SUMMARY_JS)
            time.sleep(0.5)
            png = page.send("Page.captureScreenshot", format="png")["data"]
        finally:
            page.close()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(png))
    report.update(workflow=str(workflow), expected_nodes=len(wf["nodes"]), screenshot=str(out))
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI base URL (default %(default)s)")
    p.add_argument("--workflow", type=Path, default=REPO / "workflows" / "wan21_t2v_1.3b_tmd.json")
    p.add_argument("-o", "--out", type=Path, default=Path("/tmp/tmd_frontend.png"))
    p.add_argument("--size", default="1600x1000", help="window size WxH (default %(default)s)")
    p.add_argument(
        "--timeout", type=float, default=90.0, help="seconds for the frontend to boot (default %(default)g)"
    )
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    try:
        report = screenshot_workflow(args.server, args.workflow, args.out, args.size, args.timeout)
    except (OSError, RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    ok = not report["missing_node_types"] and report["nodes"] == report["expected_nodes"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
