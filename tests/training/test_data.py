"""Training data (docs/method.md §6): shards round trip, deterministic resumable reader, make-data with the teacher."""

import json

import pytest
import torch
from helpers_wan import make_tiny_teacher, save_diffusers_single

from tmd_core.errors import ConfigError
from tmd_core.noise import make_noise
from tmd_core.sampler import sample_teacher
from tmd_core.training.data import ShardDataset, ShardReader, ShardWriter, pad_context
from tmd_core.training.make_data import TextEncoder, make_data

LATENT = (4, 1, 4, 4)  # C, F, H, W of the tiny teacher (4 channels, patch 1x2x2)
TEXT_DIM = 24


def _samples(n, seed=0, max_len=6):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(n, *LATENT, generator=g)
    lengths = torch.randint(1, max_len + 1, (n,), generator=g).tolist()
    contexts = [torch.randn(k, TEXT_DIM, generator=g) for k in lengths]
    prompts = [f"prompt {i} — ünïcode 視頻" for i in range(n)]
    return latents, contexts, prompts


@pytest.fixture(scope="module")
def teacher():
    return make_tiny_teacher(0)


def test_shards_round_trip_latents_contexts_prompts(tmp_path):
    latents, contexts, prompts = _samples(7)
    neg = torch.randn(3, TEXT_DIM)
    w = ShardWriter(tmp_path / "d", shard_size=3, text_len=8, source={"kind": "test"})
    w.set_negative(neg, "bad things")
    w.add(latents[:4], contexts[:4], prompts[:4], seeds=[10, 11, 12, 13])
    w.add(latents[4:], [pad_context(c, 8) for c in contexts[4:]], prompts[4:])  # padded input is trimmed
    w.close()
    index = json.loads((tmp_path / "d" / "index.json").read_text())
    assert index["complete"] and index["num_samples"] == 7 and len(index["shards"]) == 3
    assert index["text_len"] == 8 and index["negative_prompt"] == "bad things"
    ds = ShardDataset(tmp_path / "d")
    assert len(ds) == 7 and ds.latent_shape == LATENT
    for i in range(7):
        x, ctx, prompt = ds.sample(i)
        assert torch.equal(x, latents[i])
        assert torch.equal(ctx, pad_context(contexts[i], 8))
        assert prompt == prompts[i]
    assert torch.equal(ds.negative_context, pad_context(neg, 8)[None])
    b = ds.batch([6, 0])
    assert b["latents"].shape == (2, *LATENT) and b["context"].shape == (2, 8, TEXT_DIM)
    assert b["prompts"] == [prompts[6], prompts[0]] and b["seeds"].tolist() == [-1, 10]


def test_writer_refuses_existing_folder_without_resume(tmp_path):
    latents, contexts, prompts = _samples(2)
    w = ShardWriter(tmp_path / "d", shard_size=2)
    w.add(latents, contexts, prompts)
    w.close()
    with pytest.raises(ConfigError, match="already holds a data set"):
        ShardWriter(tmp_path / "d")


def _written(tmp_path, n=10):
    latents, contexts, prompts = _samples(n)
    w = ShardWriter(tmp_path / "d", shard_size=4)
    w.add(latents, contexts, prompts)
    w.close()
    return ShardDataset(tmp_path / "d")


def test_reader_shuffles_deterministically_per_seed(tmp_path):
    ds = _written(tmp_path)
    r1, r2, r3 = ShardReader(ds, 4, seed=3), ShardReader(ds, 4, seed=3), ShardReader(ds, 4, seed=4)
    s1 = [r1.next_indices() for _ in range(5)]
    s2 = [r2.next_indices() for _ in range(5)]
    s3 = [r3.next_indices() for _ in range(5)]
    assert s1 == s2
    assert s1 != s3
    flat = sum(s1, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))  # epochs are permutations
    assert flat[:10] != flat[10:20]  # a new permutation per epoch
    assert flat[:10] != list(range(10))


def test_reader_resumes_exactly_from_saved_position(tmp_path):
    ds = _written(tmp_path)
    r = ShardReader(ds, 3, seed=1)
    for _ in range(4):  # crosses the first epoch boundary (12 > 10 samples)
        r.next_batch()
    state = json.loads(json.dumps(r.state_dict()))  # what a checkpoint stores
    expected = [r.next_batch() for _ in range(5)]
    r2 = ShardReader(ds, 3, seed=999)
    r2.load_state_dict(state)
    got = [r2.next_batch() for _ in range(5)]
    for e, g in zip(expected, got):
        assert torch.equal(e["indices"], g["indices"]) and torch.equal(e["latents"], g["latents"])


def test_reader_splits_global_batch_across_processes(tmp_path):
    ds = _written(tmp_path)
    whole = ShardReader(ds, 4, seed=2)
    parts = [ShardReader(ds, 4, seed=2, rank=k, world_size=2) for k in range(2)]
    for _ in range(4):
        assert whole.next_indices() == parts[0].next_indices() + parts[1].next_indices()
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        ShardReader(ds, 4, world_size=3)


def test_make_data_latents_equal_teacher_samples_for_their_seeds(tmp_path, teacher):
    g = torch.Generator().manual_seed(5)
    contexts = [torch.randn(k, TEXT_DIM, generator=g) for k in (3, 5, 2)]
    neg = torch.randn(4, TEXT_DIM, generator=g)
    out = make_data(teacher, tmp_path / "d", contexts=contexts, prompts=["a", "b", "c"], negative_context=neg,
                    latent_shape=LATENT, steps=3, shift=5.0, guidance_scale=4.0, seed=100, batch_size=1,
                    shard_size=2)
    ds = ShardDataset(out)
    assert len(ds) == 3 and ds.text_len == 5
    for i in range(3):
        x, ctx, prompt = ds.sample(i)
        ref = sample_teacher(teacher, make_noise((1, *LATENT), 100 + i), pad_context(contexts[i], 5)[None], steps=3,
                             shift=5.0, guidance_scale=4.0, negative_context=pad_context(neg, 5)[None])
        assert torch.equal(x, ref[0])
        assert prompt == "abc"[i] and ds.seed(i) == 100 + i


def test_make_data_resumes_an_interrupted_folder(tmp_path, teacher):
    g = torch.Generator().manual_seed(6)
    contexts = [torch.randn(3, TEXT_DIM, generator=g) for _ in range(5)]
    kw = dict(contexts=contexts, latent_shape=LATENT, steps=2, guidance_scale=1.0, seed=0, shard_size=2)
    make_data(teacher, tmp_path / "full", **kw)

    def crash(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_data(teacher, tmp_path / "cut", progress=crash, **kw)
    assert json.loads((tmp_path / "cut" / "index.json").read_text())["num_samples"] == 2
    make_data(teacher, tmp_path / "cut", resume=True, **kw)
    full, cut = ShardDataset(tmp_path / "full"), ShardDataset(tmp_path / "cut")
    assert len(cut) == 5
    for i in range(5):
        assert torch.equal(full.sample(i)[0], cut.sample(i)[0])


def _tiny_text_encoder(folder):
    """A random 1-layer umt5 encoder (d_model = the teacher's text_dim) + a WordLevel tokenizer, offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate("a red square moves left blue".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    cfg = UMT5Config(vocab_size=len(vocab), d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                     relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    UMT5EncoderModel(cfg).save_pretrained(folder)
    return folder


def test_text_encoder_returns_prompt_tokens_like_wan(tmp_path):
    folder = _tiny_text_encoder(tmp_path / "umt5")
    enc = TextEncoder(folder, text_len=8)
    a, b = enc.encode(["a red square moves left", "blue"])
    assert a.shape == (6, TEXT_DIM) and b.shape == (2, TEXT_DIM)  # words + </s>
    ids = torch.tensor([[3, 4, 5, 6, 7, 1, 0, 0]])
    ref = enc.model(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state[0, :6]
    assert torch.allclose(a, ref, atol=1e-5)


def test_cli_make_data_with_text_encoder(tmp_path, teacher, capsys):
    from tmd_core.cli import main

    folder = _tiny_text_encoder(tmp_path / "umt5")
    teacher_path = save_diffusers_single(teacher, tmp_path / "teacher.safetensors", sidecar=True)
    (tmp_path / "prompts.txt").write_text("a red square moves left\n\nblue square\n")
    rc = main(["make-data", "--teacher", str(teacher_path), "--prompts", str(tmp_path / "prompts.txt"),
               "--text-encoder", str(folder), "--out", str(tmp_path / "d"), "--latent-shape", "4,1,4,4",
               "--steps", "2", "--text-len", "8", "--negative-prompt", "left", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["samples"] == 2
    ds = ShardDataset(tmp_path / "d")
    index = ds.index
    assert index["source"]["teacher_sha256"] and index["negative_prompt"] == "left"
    assert [ds.sample(i)[2] for i in range(2)] == ["a red square moves left", "blue square"]
    assert ds.text_len == 8 and ds.negative_context.shape == (1, 8, TEXT_DIM)
