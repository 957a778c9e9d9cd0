"""Make the training set with the teacher itself (docs/method.md §6): prompts -> umt5 embeddings -> teacher samples.

Sample i is drawn from `make_noise((1, C, F, H, W), seed + i)` and integrated by `sample_teacher`
with CFG and the negative prompt, so any sample can be regenerated from its recorded seed.
User-supplied latents skip the teacher (`write_latents`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..errors import ConfigError, InputError
from ..noise import make_noise
from ..sampler import sample_teacher
from .data import ShardWriter, pad_context, trim_context

# Wan2.1's own default negative prompt (wan/configs/shared_config.py, `sample_neg_prompt`).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


def read_prompts(path) -> list[str]:
    """One prompt per non-empty line of a text file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no prompt file at {p}: give a text file with one prompt per line")
    prompts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"{p} holds no prompts")
    return prompts


class TextEncoder:
    """A umt5/t5 encoder and its tokenizer from a local folder (transformers), Wan-style padding.

    Wan encodes with padding to `text_len` tokens, then zeroes every position past the prompt's
    own tokens; `encode` returns only the prompt's tokens (the data writer re-pads on read).
    """

    def __init__(self, folder, device="cpu", dtype: torch.dtype = torch.float32, text_len: int = 512):
        from transformers import AutoConfig, AutoTokenizer, T5EncoderModel, UMT5EncoderModel

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"text encoder folder {folder} has no config.json: point at a local transformers folder "
                "of the umt5-xxl encoder (e.g. google/umt5-xxl saved with save_pretrained) and its tokenizer"
            )
        kind = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
        cls = {"umt5": UMT5EncoderModel, "t5": T5EncoderModel, "mt5": T5EncoderModel}.get(kind)
        if cls is None:
            raise ConfigError(f"{folder} holds a {kind!r} model; expected a umt5 or t5 encoder")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = cls.from_pretrained(folder, local_files_only=True, torch_dtype=dtype).to(device).eval()
        self.device, self.text_len = device, int(text_len)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Returns one Tensor[l_i, D] (float32, CPU) per prompt: its tokens incl. the end token."""
        tok = self.tokenizer(list(prompts), padding="max_length", max_length=self.text_len, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = tok.input_ids.to(self.device), tok.attention_mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu()
        return [h[: int(n)] for h, n in zip(hidden, mask.sum(1))]


def _batch_context(tokens: Sequence[torch.Tensor], text_len: int) -> torch.Tensor:
    return torch.stack([pad_context(t, text_len) for t in tokens])


def make_data(
    teacher,
    out_dir,
    *,
    contexts: Sequence[torch.Tensor],
    prompts: Sequence[str] | None = None,
    negative_context: torch.Tensor | None = None,
    negative_prompt: str = "",
    latent_shape: Sequence[int],
    steps: int = 50,
    shift: float = 8.0,
    guidance_scale: float = 5.0,
    seed: int = 0,
    batch_size: int = 1,
    shard_size: int = 64,
    text_len: int | None = None,
    dtype: torch.dtype = torch.float32,
    source: dict | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Generate a data folder with the teacher: sample i uses noise seed `seed + i`.

    Args:
        teacher: a WanTransformer3DModel (e.g. from load_teacher).
        contexts: per prompt Tensor[l_i, D] or Tensor[L, D] (zero padding is trimmed).
        prompts: the prompt texts (stored with the samples).
        negative_context (Tensor[l, D] or [1, l, D]): the negative prompt's embedding; needed for CFG.
        latent_shape: (C, F, H, W) of one latent (Wan2.1 480x832, 81 frames: 16, 21, 60, 104).
        steps, shift, guidance_scale: teacher sampling (50 Euler steps, CFG 5 by default).
        batch_size: prompts per teacher call; shard_size: samples per shard file.
        resume: continue an interrupted folder made with the same settings.
        progress: callback(done, total).
    Returns:
        The data folder.
    """
    n = len(contexts)
    prompts = list(prompts) if prompts is not None else [""] * n
    if len(prompts) != n:
        raise InputError(f"{len(prompts)} prompts for {n} contexts: give one prompt text per embedding")
    if guidance_scale != 1.0 and negative_context is None:
        raise ConfigError("CFG (guidance_scale != 1) needs the negative prompt's embedding: give a text encoder "
                          "or a negative_context, or set guidance to 1")
    tokens = [trim_context(c.reshape(-1, c.shape[-1]).float()) for c in contexts]
    neg = None if negative_context is None else trim_context(negative_context.reshape(-1, negative_context.shape[-1]).float())
    L = max([text_len or 0, *(t.shape[0] for t in tokens), *([neg.shape[0]] if neg is not None else [])])
    settings = {"kind": "teacher", "latent_shape": list(latent_shape), "steps": steps, "shift": shift,
                "guidance_scale": guidance_scale, "seed": seed, "negative_prompt": negative_prompt,
                "text_len": L, **(source or {})}
    writer = ShardWriter(out_dir, shard_size, text_len=L, dtype=dtype, source=settings, resume=resume)
    if neg is not None:
        writer.set_negative(neg, negative_prompt)
    neg_batch = None if neg is None else pad_context(neg, L)[None]
    start = writer.num_samples  # > 0 when resuming
    for b0 in range(start, n, batch_size):
        idx = list(range(b0, min(b0 + batch_size, n)))
        noise = torch.cat([make_noise((1, *latent_shape), seed + i) for i in idx])
        context = _batch_context([tokens[i] for i in idx], L)
        x0 = sample_teacher(teacher, noise, context, steps=steps, shift=shift, guidance_scale=guidance_scale,
                            negative_context=neg_batch)
        writer.add(x0, context, [prompts[i] for i in idx], seeds=[seed + i for i in idx])
        if progress is not None:
            progress(idx[-1] + 1, n)
    return writer.close()


def write_latents(out_dir, latents: torch.Tensor, contexts: Sequence[torch.Tensor], prompts=None, *,
                  negative_context: torch.Tensor | None = None, negative_prompt: str = "",
                  shard_size: int = 64, dtype: torch.dtype = torch.float32, source: dict | None = None) -> Path:
    """A data folder from user-supplied latents (Tensor[N, C, F, H, W], normalised) and their embeddings."""
    n = latents.shape[0]
    prompts = list(prompts) if prompts is not None else [""] * n
    writer = ShardWriter(out_dir, shard_size, dtype=dtype, source={"kind": "user-latents", **(source or {})})
    if negative_context is not None:
        writer.set_negative(negative_context, negative_prompt)
    for b0 in range(0, n, shard_size):
        sl = slice(b0, min(b0 + shard_size, n))
        writer.add(latents[sl], list(contexts[sl]), prompts[sl])
    return writer.close()
