"""The toy world's text encoder: a fixed word-embedding lookup, no weights to download or train.

Stands in for Wan's umt5: a prompt becomes Tensor[L_text, text_dim] (L_text = 8, text_dim = 32),
one row per word, zero rows after the last word (like umt5's zero padding to 512 tokens). Each
word of the vocabulary gets one row of a 32×32 Sylvester–Hadamard matrix: entries ±1, rows exactly
orthogonal, identical on every machine and every torch version; the teacher's `text_embedder`
learns the projection. Words outside the vocabulary map to one shared UNK row. The empty prompt
(the negative / null condition for classifier-free guidance) encodes to all zeros.
"""

from __future__ import annotations

import logging
import re

import torch

from ..errors import InputError
from ..worlds import TOY_TEXT_DIM as TEXT_DIM  # 32, width of one token embedding (Wan2.1's umt5: 4096)
from .world import COLOURS, DIRECTIONS, SHAPES, SPEEDS

log = logging.getLogger(__name__)

TEXT_LENGTH = 8  # tokens per prompt, zero padded (Wan2.1: 512); longer prompts are truncated
PAD, UNK = 0, 1  # token ids; PAD embeds to exactly zero
VOCAB: tuple[str, ...] = ("<pad>", "<unk>", "a", "an", "the", "moving", "standing") + tuple(COLOURS) + SHAPES + DIRECTIONS + SPEEDS
WORD_IDS: dict[str, int] = {w: i for i, w in enumerate(VOCAB)}


def _hadamard(n: int) -> torch.Tensor:
    """Sylvester–Hadamard matrix of order n (a power of two): ±1 entries, H Hᵀ = n I."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def embedding_table(text_dim: int = TEXT_DIM) -> torch.Tensor:
    """Tensor[len(VOCAB), text_dim]: row 0 (PAD) zero, row i (i ≥ 1) = Hadamard row i (never the all-ones row 0)."""
    if text_dim & (text_dim - 1) or text_dim <= len(VOCAB):
        raise InputError(f"text_dim must be a power of two larger than the vocabulary ({len(VOCAB)} words), got {text_dim}")
    table = _hadamard(text_dim)[: len(VOCAB)].clone()
    table[PAD] = 0.0
    return table


def words(text: str) -> list[str]:
    """Lower-cased words of `text`; punctuation and digits are separators."""
    return re.findall(r"[a-z]+", text.lower())


def unknown_words(text: str) -> list[str]:
    """The words of `text` the encoder does not know (each becomes the UNK token)."""
    return [w for w in words(text) if w not in WORD_IDS]


def tokenize(text: str, max_length: int = TEXT_LENGTH) -> list[int]:
    """Token ids of `text` (no padding), truncated to `max_length`; unknown words -> UNK."""
    return [WORD_IDS.get(w, UNK) for w in words(text)][:max_length]


class ToyTextEncoder:
    """Encodes prompts to Wan-style context tensors.

    Args:
        text_dim: embedding width (power of two > vocabulary size).
        max_length: tokens per prompt (L_text).
    """

    def __init__(self, text_dim: int = TEXT_DIM, max_length: int = TEXT_LENGTH):
        self.text_dim = text_dim
        self.max_length = max_length
        self.table = embedding_table(text_dim)

    def encode(self, texts: str | list[str], strict: bool = False, return_mask: bool = False):
        """Encode one prompt or a list of prompts.

        Args:
            texts: a prompt or a list of B prompts; "" is the null condition (all zeros).
            strict: raise on unknown words instead of mapping them to UNK (with a warning).
            return_mask: also return which positions hold a word.
        Returns:
            context Tensor[B, max_length, text_dim] (float32; rows after the last word exactly 0),
            and if `return_mask`, mask Tensor[B, max_length] (bool).
        Raises:
            InputError: with `strict`, if a prompt has a word outside VOCAB.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = torch.full((len(texts), self.max_length), PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            unknown = unknown_words(text)
            if unknown:
                message = (f"prompt {text!r} has words the toy text encoder does not know: {', '.join(unknown)}. "
                           f"It knows: {', '.join(VOCAB[2:])}")
                if strict:
                    raise InputError(message)
                log.warning("%s (encoded as <unk>)", message)
            if len(words(text)) > self.max_length:
                log.warning("prompt %r has more than %d words; the rest is cut off", text, self.max_length)
            tok = tokenize(text, self.max_length)
            ids[i, : len(tok)] = torch.tensor(tok, dtype=torch.long)
        context = self.table[ids]  # (B, L_text, text_dim)
        return (context, ids != PAD) if return_mask else context

    __call__ = encode

    def null_context(self, batch_size: int = 1) -> torch.Tensor:
        """The null condition (empty prompt) for CFG: zeros Tensor[batch_size, max_length, text_dim]."""
        return torch.zeros(batch_size, self.max_length, self.text_dim)


def encode_prompts(texts: str | list[str], strict: bool = False) -> torch.Tensor:
    """`ToyTextEncoder().encode(texts, strict)` with the default sizes: Tensor[B, 8, 32]."""
    return ToyTextEncoder().encode(texts, strict=strict)
