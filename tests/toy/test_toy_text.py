import logging

import pytest
import torch

from tmd_core.errors import InputError
from tmd_core.toy.text import PAD, UNK, VOCAB, ToyTextEncoder, embedding_table, tokenize, unknown_words


def test_encoding_is_deterministic_and_zero_padded():
    enc = ToyTextEncoder()
    ctx, mask = enc.encode(["a red circle moving left fast", "a blue cross standing still"], return_mask=True)
    assert ctx.shape == (2, 8, 32) and ctx.dtype == torch.float32
    assert torch.equal(ctx, ToyTextEncoder().encode(["a red circle moving left fast", "a blue cross standing still"]))
    assert mask.sum(1).tolist() == [6, 5]
    assert torch.all(ctx[~mask] == 0)  # like umt5's zero padding
    assert torch.all(ctx[mask].abs() == 1)


def test_word_rows_are_orthogonal_and_distinct_prompts_differ():
    table = embedding_table()
    assert torch.all(table[PAD] == 0)
    gram = table[1:] @ table[1:].T
    assert torch.equal(gram, 32 * torch.eye(len(VOCAB) - 1))
    a = ToyTextEncoder().encode(["a red circle moving left fast", "a red circle moving right fast"])
    assert not torch.equal(a[0], a[1]) and torch.equal(a[0, :4], a[1, :4])


def test_null_condition_is_all_zeros():
    enc = ToyTextEncoder()
    assert torch.equal(enc.encode(""), torch.zeros(1, 8, 32))
    assert torch.equal(enc.null_context(3), torch.zeros(3, 8, 32))


def test_unknown_words_map_to_unk_with_a_warning_or_raise_when_strict(caplog):
    enc = ToyTextEncoder()
    assert unknown_words("a crimson circle moving sideways fast") == ["crimson", "sideways"]
    assert tokenize("a crimson circle")[1] == UNK
    with caplog.at_level(logging.WARNING):
        ctx = enc.encode("a crimson circle moving left fast")
    assert "crimson" in caplog.text
    assert torch.equal(ctx[0, 1], embedding_table()[UNK])
    with pytest.raises(InputError, match="crimson.*It knows: a, an, the"):
        enc.encode("a crimson circle moving left fast", strict=True)


def test_long_prompts_are_truncated_and_bad_widths_rejected():
    ctx = ToyTextEncoder(max_length=4).encode("a red circle moving left fast")
    assert ctx.shape == (1, 4, 32) and torch.all(ctx.abs() == 1)
    with pytest.raises(InputError, match="power of two"):
        ToyTextEncoder(text_dim=24)
