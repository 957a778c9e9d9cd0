"""Pixel measurements of toy clips for ToyBench: find the object, read its colour, shape and motion,
and measure edge sharpness, background cleanliness and temporal stability — from pixels only.

Per frame: the object colour is the median of the brightest connected blob; every pixel gets a
coverage `alpha` in [0, 1] by projecting its colour onto the background→object line; the object is
the largest connected component of `alpha > 0.5` (stray noise pixels are other components). All
steps run batched over every frame of every clip.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F_nn

from ..errors import InputError
from .world import BACKGROUND, COLOURS, SHAPES, Prompt, render_batch

PRESENT_LEVEL = 0.3  # a frame shows an object if some pixels differ from the background by this much (0-1 units)
CORE_FRACTION = 0.8  # pixels at least this fraction as bright as the brightest define the object colour
STILL_TRAVEL = 0.1  # clip travel (fraction of the side) below which the object counts as still; slow = 0.2
FAST_TRAVEL = 0.283  # between slow (0.2) and fast (0.4): their geometric mean
DESCRIPTOR = 8  # shape descriptor: the object's bounding box resampled to 8×8 coverage values


@dataclass
class ClipMeasurement:
    """What one clip shows, read from its pixels. Attribute values are None when no object is found.

    Attributes:
        colour, shape, direction, speed: classified attributes (speed None when still).
        rgb: mean object colour in [0, 1].
        travel: (dx, dy) displacement over the clip as a fraction of the frame side.
        present: fraction of frames in which an object was found.
        edge: ≈ 1 / edge width in pixels (sum |∇alpha|² / sum |∇alpha| around the object).
        background: mean |pixel - background| (0-1 units) away from the object.
        area_cv: coefficient of variation of the object's area across frames.
        colour_drift: mean distance (0-1 RGB units) of each frame's object colour from the clip's.
        features: (mean x, mean y, sqrt(area)) as fractions of the side, for diversity.
    """

    colour: str | None
    shape: str | None
    direction: str | None
    speed: str | None
    rgb: tuple[float, float, float]
    travel: tuple[float, float]
    present: float
    edge: float
    background: float
    area_cv: float
    colour_drift: float
    features: tuple[float, float, float]


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return F_nn.max_pool2d(mask.float().unsqueeze(1), 2 * radius + 1, 1, radius).squeeze(1) > 0


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """Keep the largest 8-connected component of each mask: Tensor[M, H, W] bool -> same."""
    m, h, w = mask.shape
    label = torch.where(mask, torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w), 0.0)
    while True:  # flood each component with its largest pixel index
        grown = F_nn.max_pool2d(label.unsqueeze(1), 3, 1, 1).squeeze(1) * mask
        if torch.equal(grown, label):
            break
        label = grown
    counts = torch.zeros(m, h * w + 1).scatter_add_(1, label.long().view(m, -1), torch.ones(m, h * w))
    counts[:, 0] = 0
    return mask & (label == counts.argmax(1).view(m, 1, 1))


def _bbox_descriptors(alpha: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """Coverage inside each frame's object bounding box, resampled to DESCRIPTOR²: Tensor[M, 64]."""
    m, h, w = alpha.shape
    rows, cols = obj.any(2), obj.any(1)  # (M, H), (M, W)
    ar_h, ar_w = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
    y0 = torch.where(rows, ar_h, float(h)).amin(1)
    y1 = torch.where(rows, ar_h, -1.0).amax(1) + 1
    x0 = torch.where(cols, ar_w, float(w)).amin(1)
    x1 = torch.where(cols, ar_w, -1.0).amax(1) + 1
    empty = y1 <= y0
    y0, x0 = torch.where(empty, 0.0, y0), torch.where(empty, 0.0, x0)  # no object: any box, the frame is skipped
    y1, x1 = torch.where(empty, y0 + 1, y1), torch.where(empty, x0 + 1, x1)
    theta = torch.zeros(m, 2, 3)  # output [-1, 1]² -> the box in normalized input coordinates
    theta[:, 0, 0], theta[:, 0, 2] = (x1 - x0) / w, (x0 + x1) / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = (y1 - y0) / h, (y0 + y1) / h - 1
    grid = F_nn.affine_grid(theta, [m, 1, DESCRIPTOR, DESCRIPTOR], align_corners=False)
    return F_nn.grid_sample(alpha.unsqueeze(1), grid, align_corners=False).view(m, -1)


def _frame_measures(x01: torch.Tensor) -> dict:
    """Per-frame object colour, coverage, mask. x01: Tensor[M, 3, H, W] in [0, 1]."""
    m = x01.shape[0]
    bg = torch.tensor(BACKGROUND).view(1, 3, 1, 1)
    diff = x01 - bg
    d = diff.abs().amax(1)  # (M, H, W) distance from the background, max over channels
    d_max = d.view(m, -1).topk(4, dim=1).values[:, -1]  # 4th brightest: one hot pixel is not an object
    present = d_max >= PRESENT_LEVEL
    core = largest_component((d >= CORE_FRACTION * d_max.view(m, 1, 1)) & present.view(m, 1, 1))
    # median, not mean: anti-aliased rim pixels and noise do not pull the colour away from the body's
    rgb = torch.where(core.unsqueeze(1), x01, float("nan")).flatten(2).nanmedian(2).values.nan_to_num(0.0)  # (M, 3)
    direction = rgb - bg.view(1, 3)
    alpha = ((diff * direction.view(m, 3, 1, 1)).sum(1) / direction.square().sum(1).clamp(min=1e-6).view(m, 1, 1))
    alpha = alpha.clamp(0, 1) * present.view(m, 1, 1)
    obj = largest_component(alpha > 0.5)
    present = present & (obj.sum((1, 2)) >= 2)
    return dict(rgb=rgb, alpha=alpha, obj=obj & present.view(m, 1, 1), present=present)


@functools.lru_cache(maxsize=8)
def shape_templates(frames: int, size: int) -> torch.Tensor:
    """Mean shape descriptor of each of SHAPES over rendered clips: Tensor[len(SHAPES), 64]."""
    prompts = [Prompt(c, s, d, v) for s in SHAPES for c, (d, v) in zip(COLOURS, [("right", "fast"), ("up", "slow"), ("still", None)] * 2)]
    clips = render_batch(prompts, [1000 + i for i in range(len(prompts))], frames, size)
    f = _frame_measures(((clips + 1) / 2).transpose(1, 2).reshape(-1, 3, size, size))
    desc = _bbox_descriptors(f["alpha"], f["obj"]).view(len(SHAPES), -1, DESCRIPTOR * DESCRIPTOR)
    return desc.mean(1)


def _nearest_colour(rgb: torch.Tensor) -> str:
    names = list(COLOURS)
    palette = torch.tensor([COLOURS[n] for n in names])
    unit = rgb / rgb.max().clamp(min=1e-6)  # dim but correct hues count as their colour
    return names[int((palette - unit).square().sum(1).argmin())]


def measure_clips(clips: torch.Tensor) -> list[ClipMeasurement]:
    """Measure every clip.

    Args:
        clips: Tensor[N, 3, F, H, W] with values in [-1, 1] (clamped), H == W.
    Returns:
        N ClipMeasurement.
    """
    if clips.ndim != 5 or clips.shape[1] != 3 or clips.shape[3] != clips.shape[4]:
        raise InputError(f"expected clips of shape [N, 3, F, H, W] with H == W, got {list(clips.shape)}")
    if not torch.isfinite(clips).all():
        raise InputError("clips contain NaN or inf values: the sampler diverged; check the model and settings")
    n, _, f, h, w = clips.shape
    x01 = ((clips.detach().float().cpu().clamp(-1, 1) + 1) / 2).transpose(1, 2).reshape(n * f, 3, h, w)
    fm = _frame_measures(x01)
    alpha, obj, present = fm["alpha"], fm["obj"], fm["present"]

    # position, size and shape descriptor of the object in every frame
    near = _dilate(obj, 1)
    weight = alpha * near
    area = weight.sum((1, 2))
    grid_y, grid_x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    cx = (weight * grid_x).sum((1, 2)) / area.clamp(min=1e-6)
    cy = (weight * grid_y).sum((1, 2)) / area.clamp(min=1e-6)
    shape_dist = torch.cdist(_bbox_descriptors(alpha, obj), shape_templates(f, h)).square()  # (N·F, S)

    # edge sharpness: sum |∇α|² / sum |∇α| ≈ 1 / edge width, over pairs of pixels near the object
    ring = _dilate(obj, 2)
    gx, gy = alpha[:, :, 1:] - alpha[:, :, :-1], alpha[:, 1:] - alpha[:, :-1]
    mx, my = ring[:, :, 1:] & ring[:, :, :-1], ring[:, 1:] & ring[:, :-1]
    grad2 = (gx.square() * mx).sum((1, 2)) + (gy.square() * my).sum((1, 2))
    grad1 = (gx.abs() * mx).sum((1, 2)) + (gy.abs() * my).sum((1, 2))
    bg_mask = ~ring  # frames without an object: all of the frame is background
    bg_dev = ((x01 - torch.tensor(BACKGROUND).view(1, 3, 1, 1)).abs().mean(1) * bg_mask).sum((1, 2))

    out = []
    t_all = torch.arange(f, dtype=torch.float32)
    for i in range(n):
        sl = slice(i * f, (i + 1) * f)
        p = present[sl]
        k = int(p.sum())
        background = float(bg_dev[sl].sum() / bg_mask[sl].sum().clamp(min=1))
        if k == 0:
            out.append(ClipMeasurement(None, None, None, None, (0.0, 0.0, 0.0), (0.0, 0.0), 0.0, 0.0,
                                       background, 1.0, 1.0, (0.5, 0.5, 0.0)))
            continue
        rgb_f = fm["rgb"][sl][p]
        rgb = rgb_f.mean(0)
        colour_drift = float((rgb_f - rgb).norm(dim=1).mean())
        a = area[sl][p]
        area_cv = float(a.std(unbiased=False) / a.mean().clamp(min=1e-6))
        shape = SHAPES[int(shape_dist[sl][p].mean(0).argmin())]
        direction, speed, travel = "still", None, (0.0, 0.0)
        if k >= 2:  # least-squares velocity of the centroid, as travel over the whole clip
            t = t_all[p] - t_all[p].mean()
            vx = float((t * cx[sl][p]).sum() / t.square().sum()) * (f - 1) / w
            vy = float((t * cy[sl][p]).sum() / t.square().sum()) * (f - 1) / h
            travel = (vx, vy)
            if max(abs(vx), abs(vy)) >= STILL_TRAVEL:
                direction = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
                speed = "fast" if max(abs(vx), abs(vy)) >= FAST_TRAVEL else "slow"
        edge = float(grad2[sl][p].sum() / grad1[sl][p].sum().clamp(min=1e-6))
        features = (float(cx[sl][p].mean()) / w, float(cy[sl][p].mean()) / h, float(a.mean().sqrt()) / w)
        out.append(ClipMeasurement(_nearest_colour(rgb), shape, direction, speed, tuple(rgb.tolist()), travel,
                                   k / f, edge, background, area_cv, colour_drift, features))
    return out
