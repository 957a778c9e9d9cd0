"""Does a toy teacher use each word of the prompt? Loss with the right prompt vs one word swapped.

For a batch of real moving-object clips, the flow-matching loss (Eq. 1-2) at fixed noise levels t
with the true prompt, and with the colour, shape, direction or speed word replaced by another value
(same noise, same clips). A model that uses a word pays for the swap; a model that ignores it does
not. This is how the first toy teacher (one latent frame per frame) was found to ignore direction
and speed entirely while using colour and shape (README "Toy world").
"""

from __future__ import annotations

import torch

from ..model import wan_timestep
from .codec import encode_clips
from .text import ToyTextEncoder
from .world import COLOURS, SHAPES, Prompt, training_batch

_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
SWAPS = {
    "colour": lambda p: Prompt(list(COLOURS)[(list(COLOURS).index(p.colour) + 3) % len(COLOURS)], p.shape, p.direction, p.speed),
    "shape": lambda p: Prompt(p.colour, SHAPES[(SHAPES.index(p.shape) + 2) % len(SHAPES)], p.direction, p.speed),
    "direction": lambda p: Prompt(p.colour, p.shape, _OPPOSITE[p.direction], p.speed),
    "speed": lambda p: Prompt(p.colour, p.shape, p.direction, "slow" if p.speed == "fast" else "fast"),
}


@torch.no_grad()
def word_sensitivity(model, times=(0.6, 0.9, 0.95, 0.98, 0.99), batch_size: int = 48, seed: int = 4242,
                     vae=None) -> dict:
    """Relative loss increase when one word is swapped, per noise level.

    Args:
        model: a toy teacher (diffusers WanTransformer3DModel in the toy formats).
        times: noise levels t (1 = noise).
        batch_size: clips drawn (still ones are dropped: they have no direction or speed).
        seed: draws the clips and the noise.
        vae: the toy VAE the model was trained with (a ToyVAE or its path; None: the shipped one).
    Returns:
        {"t": [...], "loss": [...], "colour": [...], "shape": [...], "direction": [...], "speed": [...]}
        where each word's list holds (loss with the word swapped) / loss - 1 at each t.
    """
    clips, prompts = training_batch(batch_size, seed=seed)
    keep = [i for i, p in enumerate(prompts) if p.direction != "still"]
    x, prompts = encode_clips(clips[keep], vae), [prompts[i] for i in keep]
    B = len(prompts)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    enc = ToyTextEncoder()
    contexts = {"true": enc.encode([p.text for p in prompts])}
    contexts.update({w: enc.encode([swap(p).text for p in prompts]) for w, swap in SWAPS.items()})
    dev = next(model.parameters()).device
    out = {"t": list(times), "loss": [], **{w: [] for w in SWAPS}}
    for t in times:
        x_t = (1 - t) * x + t * noise
        losses = {}
        for name, ctx in contexts.items():
            v = model(x_t.to(dev), timestep=wan_timestep(torch.full((B,), t), B, dev),
                      encoder_hidden_states=ctx.to(dev), return_dict=False)[0]
            losses[name] = float((v.float().cpu() - (noise - x)).square().mean())
        out["loss"].append(round(losses["true"], 5))
        for w in SWAPS:
            out[w].append(round(losses[w] / losses["true"] - 1, 5))
    return out


def format_sensitivity(sens: dict, indent: str = "") -> str:
    """The result of `word_sensitivity` as a text table: one row per word, one column per t."""
    lines = [indent + "t          " + "  ".join(f"{t:>6g}" for t in sens["t"])]
    lines += [indent + f"{w:10s} " + "  ".join(f"{v:+6.3f}" for v in sens[w]) for w in SWAPS]
    return "\n".join(lines)
