"""Pixel measurements of toy clips for ToyBench: find the object, read its colour, shape and motion,
and measure edge sharpness, background cleanliness and temporal stability — from pixels only.

Per frame: the object colour is the median of the brightest connected blob; every pixel gets a
coverage `alpha` in [0, 1] by projecting its colour onto the background→object line; the object is
the largest connected component of `alpha > 0.5` (stray noise pixels are other components). All
steps run batched over every frame of every clip. A colour far from every palette colour (white,
grey, a hue halfway between two) reads as no colour rather than the nearest one.

Shape: twelve numbers per frame (SHAPE_FEATURES: area-normalised third and fourth cumulants of the
coverage, which a Gaussian blur leaves unchanged, plus extent, solidity against a 16-direction
convex hull, lower-half and corner mass shares, elongation), averaged over the frames and read by a
linear discriminant fitted on first use on 240 renders that are clean, blurred or noisy — never on
the geometric degradations below. Accuracy on degraded renders, 48 clips per shape (objects 8-12 px,
every colour and motion, seeds from 2,000,000, disjoint from the fitting seeds):

    python -c "from tmd_core.toy.measure import format_shape_accuracy as f, shape_reader_accuracy as a; print(f(a()))"

| degradation | square | circle | triangle | cross | all |
|---|---:|---:|---:|---:|---:|
| real render | 1.00 | 1.00 | 1.00 | 1.00 | 1.000 |
| blur σ=0.5 | 1.00 | 1.00 | 1.00 | 1.00 | 1.000 |
| blur σ=1 | 1.00 | 1.00 | 1.00 | 1.00 | 1.000 |
| blur σ=1.5 | 0.98 | 1.00 | 1.00 | 0.98 | 0.990 |
| noise σ=0.1 | 1.00 | 1.00 | 1.00 | 1.00 | 1.000 |
| noise σ=0.2 | 1.00 | 1.00 | 1.00 | 1.00 | 1.000 |
| dilate 1 px | 1.00 | 1.00 | 1.00 | 1.00 | 1.000 |
| erode 1 px | 1.00 | 1.00 | 1.00 | 1.00 | 1.000 |
| rounded corners | 1.00 | 1.00 | 1.00 | 1.00 | 1.000 |
| wobbly edge | 0.96 | 1.00 | 0.85 | 0.69 | 0.875 |
| spiky edge | 0.96 | 1.00 | 0.98 | 1.00 | 0.984 |
| blobby (wobble+blur 1+noise 0.1) | 0.77 | 0.94 | 0.81 | 0.88 | 0.849 |

(noise σ in clip units [-1, 1]; wobbly: boundary displaced by a smooth random field, rms 0.6 px,
wavelengths 6-12 px; spiky: rms 0.4 px, wavelengths 2.5-5 px; see `degrade_clip`.) Weakest: a cross
whose arms are bent by a wobbly edge (read as triangle or circle) and a blobby square (read as
circle). Every object reads as some shape: a featureless blob gets whichever shape it is nearest to.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F_nn

from ..errors import InputError
from ..noise import cpu_generator
from .world import (
    BACKGROUND,
    COLOURS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    MOTIONS,
    SHAPES,
    Prompt,
    coverage,
    layout,
    shape_coverage,
)

PRESENT_LEVEL = 0.3  # a frame shows an object if some pixels differ from the background by this much (0-1 units)
CORE_FRACTION = 0.8  # pixels at least this fraction as bright as the brightest define the object colour
STILL_TRAVEL = 0.1  # clip travel (fraction of the side) below which the object counts as still; slow = 0.2
FAST_TRAVEL = 0.283  # between slow (0.2) and fast (0.4): their geometric mean
# a colour (scaled to max channel 1) this far from every palette corner reads as none: white or grey is 1 from
# every corner and would otherwise read as the first of yellow/cyan/magenta; a hue halfway between two is 0.5
COLOUR_REJECT = 0.5


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
        speed_px: magnitude of the centroid's least-squares velocity, px per frame (0 if < 2 frames).
        background_std: std of the pixel values (0-1 units, every channel) away from the object.
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
    speed_px: float = 0.0
    background_std: float = 0.0


def _one_thread(fn):
    """Run `fn` with one intra-op torch thread (restored afterwards). The scorer's tensors are small
    (frames of 32×32): extra threads gain little and, on a CPU that is busy (e.g. training), contend so
    badly that measuring gets ~4× slower."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        if before == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapper


def _max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over the (2·radius + 1)² square around each pixel of Tensor[M, H, W] ≥ 0 (outside counts as 0).

    Separable shifted maxima: an order of magnitude faster on CPU than max_pool2d on small frames."""
    h, w = x.shape[-2:]
    p = F_nn.pad(x, (radius, radius, radius, radius))
    rows = p[..., :, 0:w]
    for k in range(1, 2 * radius + 1):
        rows = torch.maximum(rows, p[..., :, k:k + w])
    out = rows[..., 0:h, :]
    for k in range(1, 2 * radius + 1):
        out = torch.maximum(out, rows[..., k:k + h, :])
    return out


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return _max_filter(mask.float(), radius) > 0


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """Keep the largest 8-connected component of each mask: Tensor[M, H, W] bool -> same."""
    m, h, w = mask.shape
    label = torch.where(mask, torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w), 0.0)
    active = torch.arange(m)  # frames whose flooding has not settled yet
    while len(active):  # flood each component with its largest pixel index
        cur, msk = label[active], mask[active]
        grown = _max_filter(_max_filter(cur, 1) * msk, 1) * msk
        label[active] = grown
        active = active[(grown != cur).flatten(1).any(1)]
    counts = torch.zeros(m, h * w + 1).scatter_add_(1, label.long().view(m, -1), torch.ones(m, h * w))
    counts[:, 0] = 0
    return mask & (label == counts.argmax(1).view(m, 1, 1))


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


# ---- shape reader -------------------------------------------------------------------------------
#
# Twelve numbers per frame (axis-aligned: the world's shapes never rotate), chosen to survive what a
# decoder does to a small object:
# alpha-weighted cumulants of the object's coverage (blur adds to second cumulants only, so third
# and fourth cumulants normalised by the area are blur-invariant) and region features of the mask.
SHAPE_FEATURES = (
    "skew",  # vertical third cumulant / area^1.5: the triangle's mass sits low (its apex is up)
    "fourfold",  # (κ40 + κ04 − 6κ22) / area²: square < 0, circle ≈ 0, cross > 0 (mass along the axes)
    "kurtosis",  # (κ40 + κ04 + 2κ22) / area²
    "spread",  # (κ20 + κ02) / area
    "elongation",  # (κ20 − κ02) / (κ20 + κ02): 0 for every shape of the world
    "tilt",  # 2κ11 / (κ20 + κ02): 0 for every shape of the world
    "hskew",  # horizontal third cumulant / area^1.5: 0 for every shape of the world
    "extent",  # mask area / bounding-box area: square 1, circle π/4, cross 5/9, triangle 1/2
    "solidity",  # mask area / convex-hull area: the cross's concave corners
    "lower_mass",  # share of the coverage below the bounding box's middle: triangle 3/4, others 1/2
    "corner_mass",  # share of the coverage in the box's four corner ninths: cross ≈ 0, square 4/9
    "top_corner_mass",  # share in the two upper corner ninths: triangle ≈ 0
)
SHAPE_MOMENT_RADIUS = 2  # px around the mask whose coverage enters the cumulants (keeps blurred tails)
HULL_DIRECTIONS = 16  # the convex hull is the intersection of this many half-planes
SHAPE_TRAIN_CLIPS = 60  # per shape, rendered on first use to fit the reader


def shape_features(alpha: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """The SHAPE_FEATURES of every frame: Tensor[M, len(SHAPE_FEATURES)] float64 (0 where no object).

    Args:
        alpha: Tensor[M, H, W] object coverage in [0, 1].
        obj: Tensor[M, H, W] bool, the object's mask (largest component of alpha > 0.5).
    """
    m, h, w = alpha.shape
    wgt = (alpha * _dilate(obj, SHAPE_MOMENT_RADIUS)).double()
    area = wgt.sum((1, 2)).clamp(min=1e-6)
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    cx = (wgt * gx).sum((1, 2)) / area
    cy = (wgt * gy).sum((1, 2)) / area
    x, y = gx - cx.view(m, 1, 1), gy - cy.view(m, 1, 1)

    def mom(p, q):
        return (wgt * x**p * y**q).sum((1, 2)) / area

    k20, k02, k11 = mom(2, 0), mom(0, 2), mom(1, 1)
    k40, k04 = mom(4, 0) - 3 * k20**2, mom(0, 4) - 3 * k02**2
    k22 = mom(2, 2) - k20 * k02 - 2 * k11**2
    var = (k20 + k02).clamp(min=1e-6)
    feats = [100 * mom(0, 3) / area**1.5, 100 * (k40 + k04 - 6 * k22) / area**2, 100 * (k40 + k04 + 2 * k22) / area**2,
             var / area, (k20 - k02) / var, 2 * k11 / var, 100 * mom(3, 0) / area**1.5]

    mask = obj.double()
    n_px = mask.sum((1, 2))
    rows, cols = obj.any(2), obj.any(1)
    ar_h, ar_w = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    y0, y1 = torch.where(rows, ar_h, float(h)).amin(1), torch.where(rows, ar_h, -1.0).amax(1) + 1
    x0, x1 = torch.where(cols, ar_w, float(w)).amin(1), torch.where(cols, ar_w, -1.0).amax(1) + 1
    box_h, box_w = (y1 - y0).clamp(min=1), (x1 - x0).clamp(min=1)
    feats.append(n_px / (box_h * box_w))
    theta = torch.arange(HULL_DIRECTIONS, dtype=torch.float64) * (2 * torch.pi / HULL_DIRECTIONS)
    proj = gx.reshape(-1, 1) * theta.cos() + gy.reshape(-1, 1) * theta.sin()  # (H·W, D)
    reach = torch.where(obj.reshape(m, -1, 1), proj.unsqueeze(0), -1e9).amax(1)  # (M, D)
    hull = (proj.unsqueeze(0) <= reach.unsqueeze(1) + 1e-9).all(2).double().sum(1)  # pixel centres in the hull
    feats.append(n_px / hull.clamp(min=1))
    u = (gx.unsqueeze(0) - x0.view(m, 1, 1)) / box_w.view(m, 1, 1)  # box coordinates in [0, 1]
    v = (gy.unsqueeze(0) - y0.view(m, 1, 1)) / box_h.view(m, 1, 1)
    feats.append((wgt * (v > 0.5)).sum((1, 2)) / area)
    corner = ((u < 1 / 3) | (u > 2 / 3)) & ((v < 1 / 3) | (v > 2 / 3)) & (u > -0.25) & (u < 1.25) & (v > -0.25) & (v < 1.25)
    feats.append((wgt * corner).sum((1, 2)) / area)
    feats.append((wgt * (corner & (v < 0.5))).sum((1, 2)) / area)
    out = torch.stack(feats, 1)
    return torch.where(obj.any(2).any(1).view(m, 1), out, 0.0).nan_to_num(0.0)


def _clip_means(values: torch.Tensor, present: torch.Tensor, frames: int) -> torch.Tensor:
    """Mean of per-frame rows over the frames that show an object: Tensor[N·F, K] -> Tensor[N, K]."""
    p = present.view(-1, frames, 1).double()
    return (values.view(-1, frames, values.shape[1]) * p).sum(1) / p.sum(1).clamp(min=1)


def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """Tensor[n, n] applying a 1-D Gaussian of `sigma` px along an axis of n pixels, edges replicated."""
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float64) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    rows = torch.arange(n).view(n, 1).expand(n, 2 * r + 1)
    cols = (rows + torch.arange(-r, r + 1).view(1, -1)).clamp(0, n - 1)
    return torch.zeros(n, n, dtype=torch.float64).index_put_((rows, cols), k.expand(n, -1), accumulate=True)


def gaussian_blur(clips: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur every frame of Tensor[..., H, W] with a Gaussian of `sigma` px (edges replicated)."""
    if sigma <= 0:
        return clips
    bh, bw = (_blur_matrix(n, sigma).to(clips.dtype) for n in clips.shape[-2:])
    return bh @ clips @ bw.T


# (name, kind, level) of the degradations `shape_reader_accuracy` reads; levels in px (noise: clip units)
DEGRADATIONS: tuple[tuple[str, str, float], ...] = (
    ("real render", "clean", 0.0),
    ("blur σ=0.5", "blur", 0.5),
    ("blur σ=1", "blur", 1.0),
    ("blur σ=1.5", "blur", 1.5),
    ("noise σ=0.1", "noise", 0.1),
    ("noise σ=0.2", "noise", 0.2),
    ("dilate 1 px", "dilate", 1.0),
    ("erode 1 px", "erode", 1.0),
    ("rounded corners", "round", 1.0),
    ("wobbly edge", "wobble", 0.6),
    ("spiky edge", "spiky", 0.4),
    ("blobby (wobble+blur 1+noise 0.1)", "blobby", 0.6),
)
_SUPERSAMPLE = 4
_WINDOW = 16  # px: a perturbed object (at most 12 px plus its perturbation) fits in this square


def _perturbed_coverage(shape: str, lay, frames: int, size: int, kind: str, level: float,
                        g: torch.Generator) -> torch.Tensor:
    """Coverage Tensor[F, H, W] of a shape whose boundary was moved: thresholded on a 4× finer grid after
    a smooth random displacement of the plane ("wobble", "blobby": wavelengths 6-12 px; "spiky": 2.5-5 px;
    rms displacement `level` px per axis; the same displacement in every frame, in the object's
    coordinates) or after a Gaussian blur of the mask ("round": corners rounded and concave corners
    filled over ≈ `level` px), then averaged back to pixels. Worked out in a 16-px window per frame."""
    win, ss = _WINDOW, _SUPERSAMPLE
    waves = []
    if kind in ("wobble", "spiky", "blobby"):
        lo, hi = (2.5, 5.0) if kind == "spiky" else (6.0, 12.0)
        for _ in range(4):
            r = torch.rand(4, generator=g).tolist()
            wavelength, angle = lo + r[0] * (hi - lo), r[1] * 2 * math.pi
            amp = (torch.randn(2, generator=g) * level / 2**0.5).tolist()
            waves.append((2 * math.pi / wavelength * math.cos(angle), 2 * math.pi / wavelength * math.sin(angle),
                          amp, (r[2] * 2 * math.pi, r[3] * 2 * math.pi)))
    out = torch.zeros(frames, size, size)
    fine = (torch.arange(win * ss, dtype=torch.float32) + 0.5) / ss
    for t in range(frames):
        cx, cy = lay.x0 + lay.vx * t, lay.y0 + lay.vy * t
        ox, oy = (min(max(math.floor(c) - win // 2, 0), size - win) for c in (cx, cy))
        dx = (fine + ox - cx).view(1, -1).expand(win * ss, win * ss)
        dy = (fine + oy - cy).view(-1, 1).expand(win * ss, win * ss)
        u, v = torch.zeros_like(dx), torch.zeros_like(dy)
        for kx, ky, amp, phase in waves:  # sin(a + b) = sin a cos b + cos a sin b: one row times one column
            a, b = kx * dx[:1], ky * dy[:, :1]
            for field, ph, am in ((u, phase[0], amp[0]), (v, phase[1], amp[1])):
                field += am * (torch.sin(a) * torch.cos(b + ph) + torch.cos(a) * torch.sin(b + ph))
        cov = (shape_coverage(shape, dx + u, dy + v, lay.side / 2) > 0.5).float()
        if kind == "round":
            cov = (gaussian_blur(cov, level * ss) > 0.5).float()
        out[t, oy:oy + win, ox:ox + win] = F_nn.avg_pool2d(cov.view(1, 1, win * ss, win * ss), ss).view(win, win)
    return out


def degrade_clip(prompt: Prompt, seed: int, kind: str, level: float, frames: int = DEFAULT_FRAMES,
                 size: int = DEFAULT_SIZE) -> torch.Tensor:
    """A render of (`prompt`, `seed`) spoilt the way a generator spoils it: Tensor[3, F, H, W] in [-1, 1].

    kind: "clean" (the renderer's clip), "blur" (Gaussian, σ = level px), "noise" (additive Gaussian,
    std = level in clip units), "dilate"/"erode" (coverage grown/shrunk by one pixel: max/min over the
    4-neighbourhood), "round", "wobble", "spiky" (see `_perturbed_coverage`), "blobby" (wobble, then blur σ=1
    and noise 0.1). Deterministic in (prompt, seed, kind, level).
    """
    g = cpu_generator(zlib.crc32(f"{prompt.text}|{seed}|{kind}|{level}".encode()))
    lay = layout(prompt, seed, frames, size)
    if kind in ("round", "wobble", "spiky", "blobby"):
        cov = _perturbed_coverage(prompt.shape, lay, frames, size, kind, level, g)
    else:
        cov = coverage(prompt.shape, lay, frames, size)
    if kind in ("dilate", "erode"):
        sign = 1.0 if kind == "dilate" else -1.0
        p = F_nn.pad(sign * cov, (1, 1, 1, 1), value=-sign if sign > 0 else 0.0)
        cov = sign * torch.stack([p[:, 1:-1, 1:-1], p[:, :-2, 1:-1], p[:, 2:, 1:-1], p[:, 1:-1, :-2], p[:, 1:-1, 2:]]).amax(0)
    bg = torch.tensor(BACKGROUND).view(3, 1, 1, 1)
    clip = (bg + cov.unsqueeze(0) * (torch.tensor(COLOURS[prompt.colour]).view(3, 1, 1, 1) - bg)) * 2 - 1
    if kind == "blur" or kind == "blobby":
        clip = gaussian_blur(clip, level if kind == "blur" else 1.0)
    if kind == "noise" or kind == "blobby":
        clip = clip + (level if kind == "noise" else 0.1) * torch.randn(clip.shape, generator=g)
    return clip.clamp(-1, 1)


def _shape_set(kind_of, first_seed: int, clips_per_shape: int, frames: int, size: int):
    """Clips of every shape (colours and motions cycling), degraded by kind_of(i) -> (kind, level)."""
    prompts, clips = [], []
    for shape in SHAPES:
        for i in range(clips_per_shape):
            colour, motion = list(COLOURS)[i % len(COLOURS)], MOTIONS[(5 * i + SHAPES.index(shape)) % len(MOTIONS)]
            p = Prompt(colour, shape, *motion)
            prompts.append(p)
            clips.append(degrade_clip(p, first_seed + i, *kind_of(i), frames, size))
    return torch.stack(clips), prompts


def _clip_shape_features(clips: torch.Tensor) -> torch.Tensor:
    n, _, f, h, w = clips.shape
    x01 = ((clips.float().clamp(-1, 1) + 1) / 2).transpose(1, 2).reshape(n * f, 3, h, w)
    fm = _frame_measures(x01)
    return _clip_means(shape_features(fm["alpha"], fm["obj"]), fm["present"], f)


@dataclass(frozen=True)
class ShapeReader:
    """Linear discriminant on SHAPE_FEATURES (clip means), fitted on renders: a clip reads as the shape
    whose class mean is nearest in Mahalanobis distance (pooled within-class covariance).

    Every object reads as some shape: a featureless blob reads as whichever shape it is nearest to, so
    shape accuracy has a chance floor (≈ 1/4 on a balanced set) rather than a reward for blobs."""

    mean: torch.Tensor  # (K,) feature offset
    scale: torch.Tensor  # (K,) feature scale
    centres: torch.Tensor  # (S, K) class means, standardised
    precision: torch.Tensor  # (K, K) inverse pooled within-class covariance, standardised

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of Tensor[N, K] clip features to each shape: Tensor[N, S]."""
        d = ((features - self.mean) / self.scale).unsqueeze(1) - self.centres.unsqueeze(0)
        return torch.einsum("nsi,ij,nsj->ns", d, self.precision, d)

    def read(self, features: torch.Tensor) -> list[str]:
        return [SHAPES[i] for i in self.distances(features).argmin(1).tolist()]


def _train_kind(i: int) -> tuple[str, float]:
    """Training clips: a third clean, a third blurred (σ 0.3-1.7 px), a third noisy (std 0.03-0.25)."""
    r = ((i * 0.6180339887) % 1.0)  # low-discrepancy levels, no random state
    return [("clean", 0.0), ("blur", 0.3 + 1.4 * r), ("noise", 0.03 + 0.22 * r)][i % 3]


def shape_reader(frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> ShapeReader:
    """The shape reader for clips of `frames` × `size`², fitted on first use (≈ 1 s) and cached.

    Fitted on SHAPE_TRAIN_CLIPS renders per shape (seeds from 1,000,000): clean, blurred or noisy only
    — the geometric degradations of `shape_reader_accuracy` (dilation, erosion, rounded, wobbly and
    spiky edges) are never seen in fitting.
    """
    return _fit_shape_reader(int(frames), int(size))


@functools.lru_cache(maxsize=8)
@_one_thread
def _fit_shape_reader(frames: int, size: int) -> ShapeReader:
    clips, prompts = _shape_set(_train_kind, 1_000_000, SHAPE_TRAIN_CLIPS, frames, size)
    x = _clip_shape_features(clips)
    y = torch.tensor([SHAPES.index(p.shape) for p in prompts])
    mean, scale = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / scale
    centres = torch.stack([z[y == s].mean(0) for s in range(len(SHAPES))])
    resid = z - centres[y]
    cov = resid.T @ resid / (len(z) - len(SHAPES))
    precision = torch.linalg.inv(cov + 1e-6 * torch.eye(len(SHAPE_FEATURES), dtype=cov.dtype))
    return ShapeReader(mean, scale, centres, precision)


@_one_thread
def shape_reader_accuracy(clips_per_shape: int = 48, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE,
                          degradations=DEGRADATIONS) -> dict[str, dict[str, float]]:
    """Share of degraded renders whose shape `measure_clips` reads right, per degradation and shape.

    Clips: every shape × `clips_per_shape` (colours and motions cycling, seeds from 2,000,000, objects
    8-12 px as the renderer draws them), degraded by `degrade_clip`. Returns {name: {shape: accuracy,
    "all": accuracy, "none": share where no object was found}}.
    """
    out = {}
    for name, kind, level in degradations:
        clips, prompts = _shape_set(lambda i, k=kind, v=level: (k, v), 2_000_000, clips_per_shape, frames, size)
        read = [m.shape for m in measure_clips(clips)]
        ok = [r == p.shape for r, p in zip(read, prompts)]
        row = {s: sum(o for o, p in zip(ok, prompts) if p.shape == s) / clips_per_shape for s in SHAPES}
        row["all"] = sum(ok) / len(ok)
        row["none"] = sum(r is None for r in read) / len(read)
        out[name] = row
    return out


def format_shape_accuracy(acc: dict[str, dict[str, float]]) -> str:
    """`shape_reader_accuracy` as a Markdown table."""
    lines = ["| degradation | " + " | ".join(SHAPES) + " | all | no object |",
             "|---|" + "---:|" * (len(SHAPES) + 2)]
    for name, row in acc.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[s]:.2f}" for s in SHAPES) + f" | {row['all']:.3f} | {row['none']:.3f} |")
    return "\n".join(lines)


def _nearest_colour(rgb: torch.Tensor) -> str | None:
    """The palette colour of `rgb` (0-1), or None when it is no palette colour (white, grey, a hue between two)."""
    names = list(COLOURS)
    palette = torch.tensor([COLOURS[n] for n in names])
    unit = rgb / rgb.max().clamp(min=1e-6)  # dim but correct hues count as their colour
    dist = (palette - unit).norm(dim=1)
    best = int(dist.argmin())
    return names[best] if float(dist[best]) < COLOUR_REJECT else None


@_one_thread
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
    shapes = shape_reader(f, h).read(_clip_means(shape_features(alpha, obj), present, f))

    # edge sharpness: sum |∇α|² / sum |∇α| ≈ 1 / edge width, over pairs of pixels near the object
    ring = _dilate(obj, 2)
    gx, gy = alpha[:, :, 1:] - alpha[:, :, :-1], alpha[:, 1:] - alpha[:, :-1]
    mx, my = ring[:, :, 1:] & ring[:, :, :-1], ring[:, 1:] & ring[:, :-1]
    grad2 = (gx.square() * mx).sum((1, 2)) + (gy.square() * my).sum((1, 2))
    grad1 = (gx.abs() * mx).sum((1, 2)) + (gy.abs() * my).sum((1, 2))
    bg_mask = ~ring  # frames without an object: all of the frame is background
    bg_dev = ((x01 - torch.tensor(BACKGROUND).view(1, 3, 1, 1)).abs().mean(1) * bg_mask).sum((1, 2))
    x64, bg64 = x01.double(), bg_mask.unsqueeze(1).double()
    bg_sum, bg_sq = (x64 * bg64).sum((1, 2, 3)), (x64.square() * bg64).sum((1, 2, 3))

    out = []
    t_all = torch.arange(f, dtype=torch.float32)
    for i in range(n):
        sl = slice(i * f, (i + 1) * f)
        p = present[sl]
        k = int(p.sum())
        background = float(bg_dev[sl].sum() / bg_mask[sl].sum().clamp(min=1))
        n_bg = 3 * float(bg_mask[sl].sum())
        mean_bg = float(bg_sum[sl].sum()) / max(n_bg, 1.0)
        background_std = math.sqrt(max(float(bg_sq[sl].sum()) / max(n_bg, 1.0) - mean_bg**2, 0.0))
        if k == 0:
            out.append(ClipMeasurement(None, None, None, None, (0.0, 0.0, 0.0), (0.0, 0.0), 0.0, 0.0,
                                       background, 1.0, 1.0, (0.5, 0.5, 0.0), 0.0, background_std))
            continue
        rgb_f = fm["rgb"][sl][p]
        rgb = rgb_f.mean(0)
        colour_drift = float((rgb_f - rgb).norm(dim=1).mean())
        a = area[sl][p]
        area_cv = float(a.std(unbiased=False) / a.mean().clamp(min=1e-6))
        shape = shapes[i]
        direction, speed, travel, speed_px = "still", None, (0.0, 0.0), 0.0
        if k >= 2:  # least-squares velocity of the centroid (px/frame), and as travel over the whole clip
            t = t_all[p].double() - t_all[p].double().mean()
            px_x = float((t * cx[sl][p].double()).sum() / t.square().sum())
            px_y = float((t * cy[sl][p].double()).sum() / t.square().sum())
            speed_px = math.hypot(px_x, px_y)
            vx, vy = px_x * (f - 1) / w, px_y * (f - 1) / h
            travel = (vx, vy)
            if max(abs(vx), abs(vy)) >= STILL_TRAVEL:
                direction = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
                speed = "fast" if max(abs(vx), abs(vy)) >= FAST_TRAVEL else "slow"
        edge = float(grad2[sl][p].sum() / grad1[sl][p].sum().clamp(min=1e-6))
        features = (float(cx[sl][p].mean()) / w, float(cy[sl][p].mean()) / h, float(a.mean().sqrt()) / w)
        out.append(ClipMeasurement(_nearest_colour(rgb), shape, direction, speed, tuple(rgb.tolist()), travel,
                                   k / f, edge, background, area_cv, colour_drift, features, speed_px, background_std))
    return out
