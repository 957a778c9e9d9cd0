#!/usr/bin/env python3
"""Draw the layers of the repository from its import graph (README "Architecture": docs/architecture.png).

Each layer is a package (nodes/, tmd_core/cli, tmd_core/toy, tmd_core/training, tmd_core/kernels) or the
top-level modules of tmd_core ("core"); tmd_core/errors.py, which every layer imports, is left out. Every
import between two layers, read with `ast` from the source (function-level imports included), becomes an
arrow labelled with how many modules make it. Layers are stacked by the longest chain of imports beneath
them, so a layer only imports layers drawn below it; an import that goes up or sideways (a cycle) is drawn
in red and makes the script exit with 1.

usage: scripts/architecture_diagram.py [--out docs/architecture.png] [--print]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# layer -> (folder, what it holds: the caption under its name)
LAYERS = {
    "nodes": ("nodes", "ComfyUI nodes: convert host types, call tmd_core"),
    "cli": ("tmd_core/cli", "the tmd command line, one module per verb"),
    "eval": ("tmd_core/eval", "tmd eval: rows x NFE, Wan videos, VBench / ToyBench, the report"),
    "toy": ("tmd_core/toy", "the toy world: clips, text, VAE, teacher, ToyBench"),
    "training": ("tmd_core/training", "distillation: data, losses, loop, state"),
    "core": ("tmd_core", "the TMD model, sampling, checkpoints, loading, worlds"),
    "kernels": ("tmd_core/kernels", "fused gating kernels and their reference"),
}
ENTRY_POINTS = {"tmd_core.__main__": "cli"}  # `python -m tmd_core` is the command line


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name (tmd_core.toy.text -> "toy"); None outside the repository's code."""
    parts = module.split(".")
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    if parts[:2] == ["tmd_core", "errors"]:
        return None
    if parts[0] == "nodes":
        return "nodes"
    if parts[0] != "tmd_core":
        return None
    if len(parts) > 1 and parts[1] in ("cli", "eval", "toy", "training", "kernels"):
        return parts[1]
    return "core"


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of every layer."""
    found = {}
    for folder in ("nodes", "tmd_core"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts)] = f
    return found


def imports_of(module: str, path: Path) -> set[str]:
    """Dotted names imported by a module (relative imports resolved; `from x import y` also as x.y)."""
    package = module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names.add(target)
            names.update(f"{target}.{a.name}" for a in node.names)
    return names


def layer_graph() -> tuple[dict[tuple[str, str], set[str]], dict[str, list[str]]]:
    """({(importing layer, imported layer): importing modules}, {layer: its module names})."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    members: dict[str, list[str]] = defaultdict(list)
    for module, path in modules().items():
        src = layer_of(module)
        if src is None:  # tmd_core/errors.py
            continue
        members[src].append(module)
        for name in imports_of(module, path):
            dst = layer_of(name)
            if dst is not None and dst != src:
                edges[(src, dst)].add(module)
    return dict(edges), dict(members)


def ranks(edges) -> dict[str, int]:
    """Height of each layer: 0 for a layer that imports no other, else 1 + the highest layer it imports.

    A cycle has no height: its layers get the rank of the longest acyclic chain found (and are reported)."""
    deps = defaultdict(set)
    for a, b in edges:
        deps[a].add(b)
    memo: dict[str, int] = {}

    def height(layer: str, seen: tuple[str, ...]) -> int:
        if layer in memo:
            return memo[layer]
        below = [height(d, (*seen, layer)) for d in deps[layer] if d not in seen]
        memo[layer] = 1 + max(below) if below else 0
        return memo[layer]

    return {layer: height(layer, ()) for layer in LAYERS}


def upward(edges, rank) -> list[tuple[str, str]]:
    """Imports that do not go to a lower layer (the two ends of a cycle, or siblings)."""
    return sorted((a, b) for a, b in edges if rank[b] >= rank[a])


def lanes(edges, rank) -> dict[tuple[str, str], int]:
    """A lane (0, 1, ...) right of the stack for every import that skips a layer; imports whose spans
    overlap get different lanes, shorter spans the inner ones."""
    long = sorted((e for e in edges if rank[e[0]] - rank[e[1]] > 1), key=lambda e: (rank[e[0]] - rank[e[1]], e))
    taken: dict[int, list[tuple[int, int]]] = defaultdict(list)
    lane = {}
    for a, b in long:
        span = (rank[b], rank[a])
        i = 0
        while any(lo <= span[1] and span[0] <= hi for lo, hi in taken[i]):  # touching ends overlap too
            i += 1
        taken[i].append(span)
        lane[(a, b)] = i
    return lane


def draw(edges, members, rank, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    box_w, box_h, gap, lane_w = 5.0, 0.9, 0.55, 0.32
    top = max(rank.values())
    ys = {layer: (top - rank[layer]) * (box_h + gap) for layer in LAYERS}  # the top layer at y = 0
    lane = lanes(edges, rank)
    n_lanes = max(lane.values(), default=-1) + 1
    bad = set(upward(edges, rank))
    height = max(ys.values()) + box_h
    fig, ax = plt.subplots(figsize=(1.4 * (box_w + 0.6 + n_lanes * lane_w), 1.4 * (height + 0.5)))
    for layer, y in ys.items():
        folder, caption = LAYERS[layer]
        ax.add_patch(FancyBboxPatch((0, y), box_w, box_h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    fc="#fdebd0" if layer == "nodes" else "#eaf2f8", ec="#2e4053", lw=1.2))
        ax.text(box_w / 2, y + box_h * 0.32, f"{folder}/  ({len(members.get(layer, []))} modules)",
                ha="center", va="center", fontsize=10, weight="bold")
        ax.text(box_w / 2, y + box_h * 0.7, caption, ha="center", va="center", fontsize=8.5)
    arrow = dict(arrowstyle="-|>", lw=1.2, shrinkA=0, shrinkB=1)
    # where a lane leaves its layer (upper half of the box's side) and enters the imported one (lower half)
    exits, entries = defaultdict(list), defaultdict(list)
    for a, b in sorted(lane, key=lambda e: lane[e]):
        exits[a].append((a, b))
        entries[b].append((a, b))
    side_y = {}
    for group, lo, hi in ((exits, 0.15, 0.45), (entries, 0.55, 0.85)):
        for layer, es in group.items():
            for k, e in enumerate(es):
                side_y.setdefault(e, []).append(ys[layer] + box_h * (lo + (hi - lo) * (k + 0.5) / len(es)))
    for (a, b), importers in sorted(edges.items()):
        colour = "#c0392b" if (a, b) in bad else "#5d6d7e"
        if (a, b) in lane:  # right of the stack: out of a's side, down the lane, into b's side
            x = box_w + 0.3 + lane[(a, b)] * lane_w
            ya, yb = side_y[(a, b)]
            ax.plot([box_w, x, x], [ya, ya, yb], color=colour, lw=1.2)
            ax.annotate("", xy=(box_w, yb), xytext=(x, yb), arrowprops={**arrow, "color": colour})
            ax.text(x, ya + 0.16, str(len(importers)), fontsize=7, color=colour, ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none"))
        else:  # to the layer right below (or, in red, to one that is not below)
            down = rank[a] > rank[b]
            x = box_w * (0.5 if down else 0.8)
            start, end = ((x, ys[a] + box_h), (x, ys[b])) if down else ((x, ys[a]), (x, ys[b] + box_h))
            ax.annotate("", xy=end, xytext=start, arrowprops={**arrow, "color": colour})
            ax.text(x + 0.12, (start[1] + end[1]) / 2, str(len(importers)), fontsize=7, color=colour,
                    ha="left", va="center")
    ax.set_xlim(-0.1, box_w + 0.6 + n_lanes * lane_w)
    ax.set_ylim(height + 0.1, -0.45)  # y grows downwards: the layer that imports the most on top
    ax.axis("off")
    ax.set_title("Layers: an arrow is an import, its number counts the importing modules\n"
                 "(tmd_core/errors.py, imported by all, is left out; drawn by scripts/architecture_diagram.py)",
                 fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.png")
    ap.add_argument("--print", action="store_true", help="also print the layers and their imports")
    args = ap.parse_args(argv)
    edges, members = layer_graph()
    rank = ranks(edges)
    if args.print:
        for layer in sorted(LAYERS, key=lambda k: -rank[k]):
            below = sorted({b for a, b in edges if a == layer}, key=lambda k: -rank[k])
            print(f"{rank[layer]}  {layer:9s} imports {', '.join(below) or '-'}")
    draw(edges, members, rank, args.out)
    print(f"wrote {args.out}")
    bad = upward(edges, rank)
    for a, b in bad:
        print(f"error: {a} imports {b}, which is not below it: {sorted(edges[(a, b)])}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
