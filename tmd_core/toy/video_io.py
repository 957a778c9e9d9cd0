"""Writing toy clips for people: GIF / MP4 files, labelled method-by-sample grids, and the
quality-vs-effective-NFE plot. Clips are upscaled with nearest neighbour so 32-pixel frames stay crisp.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError

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
    file suffix (.gif / .mp4)."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".gif":
        return write_gif(path, clip, fps, scale)
    if suffix == ".mp4":
        return write_mp4(path, clip, fps, scale)
    raise InputError(f"cannot write video {os.fspath(path)!r}: use a .gif or .mp4 file name")


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
    wrapped = [_wrap(probe, t, font, cw) for t in column_labels] if column_labels else []
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


def plot_quality_vs_nfe(rows: Sequence[dict], path, metric: str = "overall", title: str | None = None) -> str:
    """Plot a ToyBench metric against effective NFE, one line per method, and save it (PNG/SVG/PDF).

    Args:
        rows: ToyBench rows (`format_table` input); "nfe" on the x axis (log scale), `metric` on the
            y axis; rows sharing row["method"] (default: the name) form one line; rows without an
            NFE (e.g. real data) are drawn as horizontal reference lines.
        path: output image file.
    Returns:
        the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)  # no pyplot: the caller's matplotlib backend is left alone
    ax = fig.add_subplot()
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get(metric) is None:
            continue
        if row.get("nfe") is None:
            ax.axhline(row[metric], linestyle="--", color="grey", linewidth=1)
            ax.annotate(str(row.get("name", "reference")), (0.01, row[metric]), xycoords=("axes fraction", "data"),
                        fontsize=8, color="grey", va="top")
            continue
        groups.setdefault(str(row.get("method", row.get("name", "?"))), []).append(row)
    for method, pts in groups.items():
        pts = sorted(pts, key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in pts], [r[metric] for r in pts], marker="o", label=method)
        for r in pts:
            if r.get("name") and r["name"] != method:
                ax.annotate(str(r["name"]), (r["nfe"], r[metric]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("effective NFE")
    ax.set_ylabel(f"ToyBench {metric}")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    if groups:
        ax.legend(fontsize=8)
    ax.set_title(title or f"ToyBench {metric} vs effective NFE")
    fig.tight_layout()
    path = _prepare(path)
    fig.savefig(path)
    return path
