"""One report format for `tmd eval` (VBench or ToyBench): report.json, report.md and quality_vs_nfe.png.

Rows are dicts with "name" (method and setting, e.g. "TMD outer 2 x inner 2"), "method" (the line of the
plot), "nfe" (effective NFE; None for reference rows such as real data) and the scorer's numbers. The
Markdown table is shaped like the paper's Tables 1-2: one line per method x NFE; columns the headline
scores (VBench: total, quality, semantic; ToyBench: overall, adherence, quality, diversity), then the
dimensions that were run. A number with a 95 % interval (ToyBench's "<key>_ci") is shown as `v [lo, hi]`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..checkpoint import atomic_write_text

HEADLINES = {"VBench": ("total", "quality", "semantic"), "ToyBench": ("overall", "adherence", "quality", "diversity")}
PLOT_METRIC = {"VBench": "total", "ToyBench": "overall"}
FILES = {"json": "report.json", "markdown": "report.md", "plot": "quality_vs_nfe.png"}


def _cell(value, ci=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    if ci is not None and len(ci) == 2 and all(c is not None for c in ci):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def columns_for(scorer: str, dimensions=()) -> list[str]:
    """The table's score columns: the scorer's headline scores, then the dimensions run."""
    head = list(HEADLINES[scorer])
    return head + [d for d in dimensions if d not in head]


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table: method, NFE, then `columns` (no trailing newline)."""
    from ..toy.bench import method_table

    return method_table(rows, "method", list(columns), lambda row: [_cell(row.get(c), row.get(f"{c}_ci")) for c in columns])


def write_report(out_dir, rows: list[dict], scorer: str, columns: list[str], meta: dict | None = None,
                 title: str | None = None) -> dict[str, str]:
    """Write report.json ({"scorer", "columns", "meta", "rows"}), report.md and quality_vs_nfe.png into `out_dir`
    (each atomically: a file is complete or absent). Returns {"json", "markdown", "plot": path}."""
    from ..toy.video_io import plot_quality_vs_nfe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in r.items() if k != "per_clip"} for r in rows]
    paths = {k: str(out / v) for k, v in FILES.items()}
    doc = {"scorer": scorer, "columns": columns, "meta": meta or {}, "rows": rows}
    atomic_write_text(paths["json"], json.dumps(doc, indent=1, default=str) + "\n")
    title = title or f"{scorer}: quality against effective NFE"
    md = [f"# {title}", "", format_table(rows, columns), ""]
    if meta:
        md += ["", "```json", json.dumps({k: v for k, v in meta.items() if k != "prompts"}, indent=1, default=str),
               "```", ""]
    atomic_write_text(paths["markdown"], "\n".join(md))
    metric = PLOT_METRIC[scorer]
    tmp = out / f".{FILES['plot']}.{os.getpid()}.tmp.png"  # removed by remove_stale_temporaries if left over
    plot_quality_vs_nfe(rows, tmp, metric=metric, title=title, benchmark=scorer)
    tmp.replace(paths["plot"])
    return paths
