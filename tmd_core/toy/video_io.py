"""Writing toy clips for people: GIF / MP4 files, labelled method-by-sample grids, and the
quality-vs-effective-NFE plot. Clips are upscaled with nearest neighbour so 32-pixel frames stay crisp.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError

MAX_VIDEO_PIXELS = 4096 * 4096  # per frame: beyond it the H.264 encoder refuses (and the file would be useless)
MAX_LABEL_LINES = 3  # wrapped lines of a column label in `make_grid` (longer labels end in "...")
GRID_BACKGROUND = (40, 40, 40)
TEXT_COLOUR = (230, 230, 230)


def to_frames(clip, scale: int = 4) -> np.ndarray:
    """A clip as displayable frames.

    Args:
        clip: Tensor[3, F, H, W] with values in [-1, 1] (clamped), or frames already as
            np.ndarray[F, H, W, 3] uint8 (then only upscaled).
        scale: integer nearest-neighbour upscaling factor.
    Returns:
        np.ndarray[F, H·scale, W·scale, 3] uint8.
    """
    if isinstance(clip, np.ndarray):
        if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
            raise InputError(f"expected uint8 frames [F, H, W, 3], got {clip.dtype} {list(clip.shape)}")
        frames = clip
    else:
        if clip.ndim != 4 or clip.shape[0] != 3:
            raise InputError(f"expected a clip Tensor[3, F, H, W], got shape {list(clip.shape)}")
        x = ((clip.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        frames = x.permute(1, 2, 3, 0).numpy()  # (F, H, W, 3)
    if scale != 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    return np.ascontiguousarray(frames)


def _prepare(path) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def _scale(clip, scale: int | None, default: int) -> int:
    """Clips are upscaled by `default` unless told otherwise; ready-made frames (e.g. a grid) are not."""
    return scale if scale is not None else (1 if isinstance(clip, np.ndarray) else default)


def write_gif(path, clip, fps: float = 8, scale: int | None = None) -> str:
    """Write a looping GIF (Pillow); a clip Tensor is upscaled 4× unless `scale` says otherwise.
    Identical consecutive frames are merged by the GIF encoder (total duration kept). Returns the path."""
    frames = to_frames(clip, _scale(clip, scale, 4))
    images = [Image.fromarray(f) for f in frames]
    path = _prepare(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    return path


def write_mp4(path, clip, fps: float = 8, scale: int | None = None) -> str:
    """Write an H.264 MP4 (imageio-ffmpeg, yuv420p so every player opens it); a clip Tensor is upscaled
    8× unless `scale` says otherwise. Frames are padded with black to multiples of 16 pixels rather
    than resized. Returns the path."""
    import imageio.v2 as imageio

    frames = to_frames(clip, _scale(clip, scale, 8))
    _, h, w, _ = frames.shape
    ph, pw = -h % 16, -w % 16
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)))
    path = _prepare(path)
    with imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
                            macro_block_size=16, quality=8) as writer:
        for f in frames:
            writer.append_data(f)
    return path


def write_video(path, clip, fps: float = 8, scale: int | None = None) -> str:
    """Write `clip` (Tensor[3, F, H, W] or uint8 frames [F, H, W, 3]) as GIF or MP4, chosen by the
    file suffix (.gif / .mp4). The file appears complete or not at all: it is written under a temporary
    name in the same folder (`.<name>.<random>.tmp<suffix>`) and renamed when the encoder has finished."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    writers = {".gif": write_gif, ".mp4": write_mp4}
    if suffix not in writers:
        raise InputError(f"cannot write video {path!r}: use a .gif or .mp4 file name")
    frames = to_frames(clip, _scale(clip, scale, 4 if suffix == ".gif" else 8))
    if frames.shape[0] < 1 or frames.shape[1] * frames.shape[2] > MAX_VIDEO_PIXELS:
        raise InputError(f"cannot write video {path!r}: frames of {frames.shape[2]}x{frames.shape[1]} pixels "
                         f"({frames.shape[0]} frames); at most {MAX_VIDEO_PIXELS} pixels per frame: lower the scale")
    _prepare(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        writers[suffix](tmp, frames, fps, 1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines


def _clip_lines(lines: list[str]) -> list[str]:
    """At most MAX_LABEL_LINES lines of at most 60 characters, the last marked "..." when text was cut."""
    out = [line[:60] for line in lines[:MAX_LABEL_LINES]]
    if len(lines) > MAX_LABEL_LINES or any(len(line) > 60 for line in lines[:MAX_LABEL_LINES]):
        out[-1] = out[-1][:57] + "..."
    return out


def make_grid(rows: Sequence[tuple[str, object]], column_labels: Sequence[str] | None = None, scale: int = 4,
              pad: int = 4) -> np.ndarray:
    """Lay clips out as a labelled grid video: one row per method, one column per sample.

    Args:
        rows: (label, clips) pairs; clips is Tensor[N, 3, F, H, W] or a list of N Tensor[3, F, H, W];
            every row has the same N, F, H, W.
        column_labels: optional N captions (e.g. prompts), word-wrapped above the columns.
        scale: nearest-neighbour upscaling of each clip.
        pad: gap between cells in pixels.
    Returns:
        np.ndarray[F, H', W', 3] uint8 — pass to `write_video`.
    """
    if not rows:
        raise InputError("make_grid needs at least one (label, clips) row")
    cells = [[to_frames(c, scale) for c in clips] for _, clips in rows]
    shapes = {c.shape for row in cells for c in row}
    counts = {len(row) for row in cells}
    if len(shapes) != 1 or len(counts) != 1:
        raise InputError(f"every row needs the same number of clips of the same shape, got counts {sorted(counts)} "
                         f"and frame shapes {sorted(shapes)}")
    (f, ch, cw, _), n = shapes.pop(), counts.pop()
    if column_labels is not None and len(column_labels) != n:
        raise InputError(f"{len(column_labels)} column labels for {n} columns: give one label per column")
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = int(math.ceil(sum(font.getmetrics()))) + 1
    label_w = int(max(probe.textlength(label, font=font) for label, _ in rows)) + 2 * pad
    wrapped = [_clip_lines(_wrap(probe, t, font, cw)) for t in column_labels] if column_labels else []
    head_h = (max(len(w) for w in wrapped) * line_h + pad) if wrapped else 0
    width = label_w + n * (cw + pad)
    height = head_h + len(rows) * (ch + pad) + pad

    canvas = Image.new("RGB", (width, height), GRID_BACKGROUND)  # the static part: labels
    draw = ImageDraw.Draw(canvas)
    for j, lines in enumerate(wrapped):
        for k, line in enumerate(lines):
            draw.text((label_w + j * (cw + pad), pad + k * line_h), line, fill=TEXT_COLOUR, font=font)
    for i, (label, _) in enumerate(rows):
        draw.text((pad, head_h + pad + i * (ch + pad) + (ch - line_h) // 2), label, fill=TEXT_COLOUR, font=font)
    base = np.asarray(canvas)
    out = np.repeat(base[None], f, axis=0)
    for i, row in enumerate(cells):
        for j, frames in enumerate(row):
            y, x = head_h + pad + i * (ch + pad), label_w + j * (cw + pad)
            out[:, y:y + ch, x:x + cw] = frames
    return out


def plot_quality_vs_nfe(rows: Sequence[dict], path, metric: str = "overall", title: str | None = None,
                        benchmark: str = "ToyBench") -> str:
    """Plot a ToyBench metric against effective NFE, one line per method, and save it (PNG/SVG/PDF).

    Args:
        rows: ToyBench rows (`format_table` input); "nfe" on the x axis (log scale), `metric` on the
            y axis; rows sharing row["method"] (default: the name) form one line; rows without an
            NFE (e.g. real data) are drawn as horizontal reference lines. Each point is labelled with
            what distinguishes it inside its line (e.g. "inner 2", "2-step") where the label fits
            without overlapping another label, a point or the legend.
        path: output image file.
        benchmark: the scorer's name on the axis and in the default title (`tmd eval` also plots VBench).
    Returns:
        the path written.
    """
    fig = draw_quality_vs_nfe(rows, metric, title, benchmark)
    path = _prepare(path)
    fig.savefig(path)
    return path


def _short_label(name: str, family: str) -> str:
    """What `name` adds to its line's name: "TMD outer 1 x inner 2" in "TMD outer 1" -> "inner 2"."""
    words, fam = name.split(), family.split()
    k = 0
    while k < min(len(words), len(fam)) and words[k] == fam[k]:
        k += 1
    rest = [w for w in words[k:] if w != "x"] if k else words
    return " ".join(rest) or name


def draw_quality_vs_nfe(rows: Sequence[dict], metric: str = "overall", title: str | None = None,
                        benchmark: str = "ToyBench"):
    """The figure `plot_quality_vs_nfe` saves (matplotlib Figure; no pyplot, the caller's backend is left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    groups: dict[str, list[dict]] = {}
    refs = []
    for row in rows:
        if row.get(metric) is None:
            continue
        if row.get("nfe") is None:
            refs.append(row)
            continue
        groups.setdefault(str(row.get("method", row.get("name", "?"))), []).append(row)
    values = [r[metric] for r in rows if r.get(metric) is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max(0.05, 0.08 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(1.05, hi + pad))
    for row in refs:
        ax.axhline(row[metric], linestyle="--", color="grey", linewidth=1, label=str(row.get("name", "reference")))
    points, lines = [], []
    for method, pts in groups.items():
        pts = sorted(pts, key=lambda r: r["nfe"])
        (line,) = ax.plot([r["nfe"] for r in pts], [r[metric] for r in pts], marker="o", label=method)
        points += [(r, method, line.get_color()) for r in pts]
        lines.append(line)
    ax.set_xscale("log")
    ax.set_xlabel("effective NFE (log scale)")
    ax.set_ylabel(f"{benchmark} {metric}")
    ax.grid(True, which="both", alpha=0.3)
    if groups or refs:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_title(title or f"{benchmark} {metric} vs effective NFE")
    fig.tight_layout()
    _place_labels(fig, ax, [(r, _short_label(str(r.get("name", "")), m), c) for r, m, c in points
                            if r.get("name") and r["name"] != m], metric, lines)
    return fig


def _place_labels(fig, ax, labelled: list[tuple[dict, str, str]], metric: str, lines=()) -> None:
    """Annotate points (in their line's colour) where the text overlaps no other label, no line or marker and
    no legend; others stay unlabelled (their line and NFE still identify them)."""
    renderer = fig.canvas.get_renderer()
    boxes = []  # obstacles (x0, y0, x1, y1) in display pixels
    legend = ax.get_legend()
    if legend is not None:
        b = legend.get_window_extent(renderer)
        boxes.append((b.x0, b.y0, b.x1, b.y1))
    frame = ax.get_window_extent(renderer)
    for line in lines:  # markers, and the segments between them sampled every few pixels
        xy = ax.transData.transform(np.column_stack(line.get_data()).astype(float))
        for (x0, y0), (x1, y1) in zip(xy, xy[1:] if len(xy) > 1 else xy):
            for t in np.linspace(0.0, 1.0, max(1, int(math.hypot(x1 - x0, y1 - y0) // 3)) + 1):
                cx, cy = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                boxes.append((cx - 4, cy - 4, cx + 4, cy + 4))
    for y in [ref.get_ydata()[0] for ref in ax.get_lines() if ref not in lines]:  # reference lines across the plot
        cy = ax.transData.transform((1.0, y))[1]
        boxes.append((frame.x0, cy - 1, frame.x1, cy + 1))
    taken = np.array(boxes, dtype=float).reshape(-1, 4)
    offsets = [(5, 5), (5, -12), (-5, 5), (-5, -12), (5, 14), (5, -21), (-5, 14), (-5, -21)]
    for row, text, colour in labelled:
        for dx, dy in offsets:
            note = ax.annotate(text, (row["nfe"], row[metric]), textcoords="offset points", xytext=(dx, dy), fontsize=7,
                               ha="left" if dx > 0 else "right", color=colour)
            b = note.get_window_extent(renderer)
            inside = frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1
            hits = (taken[:, 0] < b.x1) & (b.x0 < taken[:, 2]) & (taken[:, 1] < b.y1) & (b.y0 < taken[:, 3])
            if inside and not hits.any():
                taken = np.vstack([taken, [b.x0, b.y0, b.x1, b.y1]])
                break
            note.remove()
