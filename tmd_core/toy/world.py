"""The toy text-to-video world (docs/toy_world.md): attributes, prompt grammar, renderer.

One object of a pure colour on a black background, moving in a straight line at constant speed.
Prompts follow one grammar:

    "a {colour} {shape} moving {direction} {speed}"     e.g. "a red circle moving left fast"
    "a {colour} {shape} standing still"

6 colours × 4 shapes × 9 motions (4 directions × 2 speeds + still) = 216 prompts; 24 of them are
held out (`split="test"`) so that a model can be checked on combinations it never saw. The seed of
a clip draws the object's size and start position, so clips of one prompt differ (this is what
ToyBench's diversity measures). Clips are `Tensor[3, F, H, W]` in [-1, 1], background exactly -1.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..noise import cpu_generator

# Corners of the RGB cube (values in [0, 1]): every pair differs by a full channel, so a blurred or
# dimmed sample is still closest to its own colour. White is left out: it is the one colour a
# washed-out sample of any other colour drifts towards.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
}
BACKGROUND: tuple[float, float, float] = (0.0, 0.0, 0.0)  # black, i.e. -1 in clip values
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still")
SPEEDS: tuple[str, ...] = ("slow", "fast")
# unit vector of each direction in image coordinates (x to the right, y downwards)
DIRECTION_VECTORS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0), "still": (0.0, 0.0),
}
# distance travelled over the whole clip, as a fraction of the frame side (independent of the
# frame count, so 8- and 16-frame clips of one prompt show the same motion)
TRAVEL: dict[str, float] = {"slow": 0.2, "fast": 0.4}
SIZE_RANGE = (0.25, 0.375)  # object side as a fraction of the frame side (8-12 px at 32 px)
MARGIN = 1.0 / 32  # the object stays this far (fraction of the side) inside the frame at all times

DEFAULT_FRAMES = 8
DEFAULT_SIZE = 32

# motions in a fixed order: 4 directions × 2 speeds, then still
MOTIONS: tuple[tuple[str, str | None], ...] = tuple(
    (d, s) for d in DIRECTIONS if d != "still" for s in SPEEDS
) + (("still", None),)


@dataclass(frozen=True)
class Prompt:
    """One point of the toy world: what the clip must show.

    Attributes:
        colour: one of COLOURS.
        shape: one of SHAPES.
        direction: one of DIRECTIONS ("still" means no motion).
        speed: one of SPEEDS for a moving object, None when direction is "still".
    """

    colour: str
    shape: str
    direction: str
    speed: str | None = None

    def __post_init__(self):
        for value, allowed, what in ((self.colour, COLOURS, "colour"), (self.shape, SHAPES, "shape"),
                                     (self.direction, DIRECTIONS, "direction")):
            if value not in allowed:
                raise InputError(f"unknown {what} {value!r}: the toy world has {', '.join(allowed)}")
        if self.direction == "still" and self.speed is not None:
            raise InputError(f"a still object has no speed (got speed={self.speed!r}): use speed=None")
        if self.direction != "still" and self.speed not in SPEEDS:
            raise InputError(f"a moving object needs a speed in {SPEEDS}, got {self.speed!r}")

    @property
    def text(self) -> str:
        if self.direction == "still":
            return f"a {self.colour} {self.shape} standing still"
        return f"a {self.colour} {self.shape} moving {self.direction} {self.speed}"

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str) -> Prompt:
        """Read a prompt back from text; word order and articles do not matter.

        Raises:
            InputError: if a colour, a shape or the motion is missing, repeated or unknown.
        """
        words = re.findall(r"[a-z]+", text.lower())
        found = {}
        for what, allowed in (("colour", COLOURS), ("shape", SHAPES), ("direction", DIRECTIONS), ("speed", SPEEDS)):
            hits = [w for w in words if w in allowed]
            if len(set(hits)) > 1:
                raise InputError(f"prompt {text!r} names more than one {what} ({', '.join(hits)}): name exactly one")
            found[what] = hits[0] if hits else None
        for what, allowed in (("colour", COLOURS), ("shape", SHAPES), ("direction", DIRECTIONS)):
            if found[what] is None:
                raise InputError(
                    f"prompt {text!r} names no {what}: the toy world knows {', '.join(allowed)} "
                    f"(example: {example_prompt().text!r})"
                )
        if found["direction"] != "still" and found["speed"] is None:
            raise InputError(f"prompt {text!r} names no speed: add one of {', '.join(SPEEDS)}")
        if found["direction"] == "still":
            found["speed"] = None
        return cls(**found)


def example_prompt() -> Prompt:
    return Prompt("red", "circle", "left", "fast")


def as_prompt(prompt: Prompt | str) -> Prompt:
    return prompt if isinstance(prompt, Prompt) else Prompt.parse(prompt)


def all_prompts() -> list[Prompt]:
    """Every prompt of the world (216), in a fixed order: colour, then shape, then motion."""
    return [Prompt(c, s, d, v) for c, s, (d, v) in itertools.product(COLOURS, SHAPES, MOTIONS)]


def is_held_out(prompt: Prompt) -> bool:
    """True for the 24 combinations kept out of training.

    Exactly one motion is held out per (colour, shape) pair, chosen so that every pair of attribute
    values (colour+shape, colour+motion, shape+motion) still occurs in the training split.
    """
    c = list(COLOURS).index(prompt.colour)
    s = SHAPES.index(prompt.shape)
    m = MOTIONS.index((prompt.direction, prompt.speed))
    return (3 * c + 5 * s + m) % len(MOTIONS) == 0


def prompt_split(split: str = "all") -> list[Prompt]:
    """The prompts of one split: "train" (192), "test" (24 held-out combinations) or "all" (216)."""
    if split == "all":
        return all_prompts()
    if split not in ("train", "test"):
        raise InputError(f"unknown split {split!r}: use 'train', 'test' or 'all'")
    return [p for p in all_prompts() if is_held_out(p) == (split == "test")]


@dataclass(frozen=True)
class Layout:
    """Where the object of one clip is: drawn from the seed. Lengths in pixels.

    Attributes:
        side: side of the object's bounding square.
        x0, y0: centre of the bounding square in the first frame (pixel centres are at i + 0.5).
        vx, vy: displacement per frame.
    """

    side: float
    x0: float
    y0: float
    vx: float
    vy: float


def layout(prompt: Prompt, seed: int, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> Layout:
    """The object's size and trajectory for `prompt` and `seed`; the whole path stays inside the frame."""
    g = cpu_generator(seed)
    u = torch.rand(3, generator=g, dtype=torch.float64).tolist()
    side = size * (SIZE_RANGE[0] + u[0] * (SIZE_RANGE[1] - SIZE_RANGE[0]))
    travel = size * TRAVEL[prompt.speed] if prompt.speed else 0.0
    ux, uy = DIRECTION_VECTORS[prompt.direction]
    lo, hi = size * MARGIN + side / 2, size - size * MARGIN - side / 2  # allowed centre range
    starts = []
    for unit, r in ((ux, u[1]), (uy, u[2])):
        a, b = lo - min(0.0, unit * travel), hi - max(0.0, unit * travel)
        starts.append(a + r * (b - a))
    step = travel / max(frames - 1, 1)
    return Layout(side, starts[0], starts[1], ux * step, uy * step)


def _ramp(inside_by: torch.Tensor) -> torch.Tensor:
    """Share of a unit pixel on the inner side of an edge that its centre is `inside_by` pixels inside of."""
    return (inside_by + 0.5).clamp(0, 1)


def shape_coverage(shape: str, dx: torch.Tensor, dy: torch.Tensor, half: float) -> torch.Tensor:
    """Anti-aliased coverage in [0, 1] of unit pixels centred at offsets (dx, dy) (broadcastable) from
    the centre of an axis-aligned shape of side 2·half.

    Rectangles (square, the two bars of the cross) are box-filtered exactly: products of per-axis
    pixel overlaps, so their summed coverage is their area at any sub-pixel position. Circle and
    triangle ramp their signed distance over one pixel (exact along straight edges).
    """
    ax, ay = dx.abs(), dy.abs()
    if shape == "square":
        return _ramp(half - ax) * _ramp(half - ay)
    if shape == "cross":  # a plus sign with arms one third of the side thick: bar + bar - their overlap
        arm = half / 3
        return (_ramp(arm - ax) * _ramp(half - ay) + _ramp(half - ax) * _ramp(arm - ay)
                - _ramp(arm - ax) * _ramp(arm - ay))
    if shape == "circle":
        return _ramp(half - torch.sqrt(dx * dx + dy * dy))
    if shape == "triangle":  # apex at the top centre, base along the bottom edge
        return _ramp(-torch.maximum(dy - half, (2 * ax - dy - half) / 5**0.5))
    raise InputError(f"unknown shape {shape!r}: the toy world has {', '.join(SHAPES)}")


def coverage(shape: str, lay: Layout, frames: int, size: int) -> torch.Tensor:
    """Object coverage in [0, 1] of every pixel of every frame: Tensor[F, H, W] (float32)."""
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    t = torch.arange(frames, dtype=torch.float64)
    dx = (centres.view(1, 1, size) - (lay.x0 + lay.vx * t).view(frames, 1, 1)).float()  # (F, 1, W)
    dy = (centres.view(1, size, 1) - (lay.y0 + lay.vy * t).view(frames, 1, 1)).float()  # (F, H, 1)
    return shape_coverage(shape, dx, dy, lay.side / 2)  # broadcasts to (F, H, W)


def render_clip(prompt: Prompt | str, seed: int, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> torch.Tensor:
    """Render one clip of `prompt`; the same (prompt, seed, frames, size) always gives the same clip.

    Args:
        prompt: a Prompt or its text.
        seed: draws the object's size and start position.
        frames: number of frames F (≥ 2).
        size: frame side H = W in pixels (≥ 16).
    Returns:
        Tensor[3, F, H, W], float32 in [-1, 1], background exactly -1.
    """
    prompt = as_prompt(prompt)
    if frames < 2 or size < 16:
        raise InputError(f"clips need frames >= 2 and size >= 16 (got frames={frames}, size={size})")
    alpha = coverage(prompt.shape, layout(prompt, seed, frames, size), frames, size)  # (F, H, W)
    bg = torch.tensor(BACKGROUND).view(3, 1, 1, 1)
    fg = torch.tensor(COLOURS[prompt.colour]).view(3, 1, 1, 1)
    rgb = bg + alpha.unsqueeze(0) * (fg - bg)  # (3, F, H, W) in [0, 1]
    return rgb * 2 - 1


def render_batch(prompt_list: list[Prompt | str], seeds: list[int], frames: int = DEFAULT_FRAMES,
                 size: int = DEFAULT_SIZE) -> torch.Tensor:
    """Render `render_clip(prompt_list[i], seeds[i])` for every i: Tensor[N, 3, F, H, W]."""
    if len(prompt_list) != len(seeds):
        raise InputError(f"{len(prompt_list)} prompts but {len(seeds)} seeds: give one seed per prompt")
    return torch.stack([render_clip(p, s, frames, size) for p, s in zip(prompt_list, seeds)])


def training_batch(batch_size: int, seed: int, split: str = "train", frames: int = DEFAULT_FRAMES,
                   size: int = DEFAULT_SIZE) -> tuple[torch.Tensor, list[Prompt]]:
    """A random batch of real clips for training: prompts drawn uniformly from `split`.

    Returns:
        (clips Tensor[B, 3, F, H, W] in [-1, 1], the B prompts). Deterministic in `seed`.
    """
    pool = prompt_split(split)
    g = cpu_generator(seed)
    idx = torch.randint(len(pool), (batch_size,), generator=g).tolist()
    clip_seeds = torch.randint(2**62, (batch_size,), generator=g).tolist()
    chosen = [pool[i] for i in idx]
    return render_batch(chosen, clip_seeds, frames, size), chosen
