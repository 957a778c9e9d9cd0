"""Training data (docs/method.md §6): safetensors shards of latents + text embeddings + prompts, and a reader.

A data folder holds `index.json` (format `tmd-data/1`), shards `shard-00000.safetensors`, ... and
optionally `negative.safetensors` (the negative prompt's embedding, the null condition of CFG).
A shard holds `latents` [n, C, F, H, W], the prompts' text tokens packed without their zero padding
(`context` [sum of lengths, text_dim] + `context_lengths` [n]) and `seeds` [n] (-1 = unknown); its
metadata holds the prompt texts (JSON). The reader pads every context back to `text_len` with
zeros, which is exactly how Wan pads umt5 outputs, so nothing is lost by the packing.

The reader walks one seeded permutation of all samples per epoch; its position is one integer
(samples consumed), so a checkpoint restores it exactly.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import safe_open

from ..checkpoint import atomic_save_safetensors, atomic_write_text
from ..errors import ConfigError, InputError

FORMAT = "tmd-data/1"
INDEX = "index.json"
NEGATIVE = "negative.safetensors"


def trim_context(context: torch.Tensor) -> torch.Tensor:
    """Drop trailing all-zero token rows (Wan's padding): Tensor[L, D] -> Tensor[l, D], l >= 1."""
    nonzero = (context != 0).any(dim=-1).nonzero()
    n = int(nonzero[-1]) + 1 if len(nonzero) else 1
    return context[:n]


def pad_context(tokens: torch.Tensor, text_len: int) -> torch.Tensor:
    """Zero-pad Tensor[l, D] to Tensor[text_len, D]."""
    return torch.nn.functional.pad(tokens, (0, 0, 0, text_len - tokens.shape[0]))


class ShardWriter:
    """Append samples, one shard file per `shard_size`; the index is rewritten after every shard.

    An interrupted writer leaves a valid folder (`complete: false`) that `resume=True` continues.

    Args:
        folder: output folder (created).
        shard_size: samples per shard file.
        text_len: pad length of contexts on read (Wan: 512); default: the longest context added.
        dtype: storage dtype of latents and contexts (float32 or bfloat16).
        source: JSON-able facts about how the data was made (teacher hash, steps, CFG, ...).
        resume: continue an incomplete folder made with the same `source` instead of refusing it.
    """

    def __init__(self, folder, shard_size: int = 64, *, text_len: int | None = None,
                 dtype: torch.dtype = torch.float32, source: dict | None = None, resume: bool = False):
        self.folder = Path(folder)
        self.shard_size = int(shard_size)
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
        self.dtype = dtype
        self.index = {
            "format": FORMAT, "complete": False, "num_samples": 0, "shards": [], "latent_shape": None,
            "text_dim": None, "text_len": text_len, "dtype": str(dtype).removeprefix("torch."),
            "negative_prompt": None, "has_negative": False, "source": json.loads(json.dumps(source or {})),
        }
        index_path = self.folder / INDEX
        if index_path.exists():
            old = json.loads(index_path.read_text())
            if not resume or old.get("complete"):
                raise ConfigError(
                    f"{self.folder} already holds a data set ({old.get('num_samples', 0)} samples): "
                    "choose another output folder, delete it, or pass --resume to continue an unfinished one"
                )
            if old.get("source") != self.index["source"]:
                raise ConfigError(
                    f"{self.folder} was started with other settings ({old.get('source')}); "
                    "resume with the same settings or use another folder"
                )
            self.index = old
        self.folder.mkdir(parents=True, exist_ok=True)
        self._buf: list[tuple[torch.Tensor, torch.Tensor, str, int]] = []

    @property
    def num_samples(self) -> int:
        """Samples already on disk plus buffered."""
        return self.index["num_samples"] + len(self._buf)

    def add(self, latents: torch.Tensor, contexts, prompts, seeds=None) -> None:
        """Buffer samples; write full shards.

        Args:
            latents (Tensor[n, C, F, H, W]): normalised latents.
            contexts: Tensor[n, L, D] (zero-padded) or a list of n Tensor[l_i, D].
            prompts: n prompt texts ("" if unknown).
            seeds: n noise seeds (or None).
        """
        n = latents.shape[0]
        if latents.ndim != 5:
            raise InputError(f"latents must be [n, C, F, H, W], got shape {tuple(latents.shape)}")
        if len(contexts) != n or len(prompts) != n:
            raise InputError(f"got {n} latents, {len(contexts)} contexts and {len(prompts)} prompts: counts must match")
        seeds = [-1] * n if seeds is None else [int(s) for s in seeds]
        shape = list(latents.shape[1:])
        if self.index["latent_shape"] is None:
            self.index["latent_shape"] = shape
        elif self.index["latent_shape"] != shape:
            raise InputError(f"latent shape {shape} differs from the data set's {self.index['latent_shape']}")
        for i in range(n):
            tokens = trim_context(contexts[i].reshape(-1, contexts[i].shape[-1]))
            self._check_tokens(tokens)
            self._buf.append((latents[i].detach().cpu(), tokens.detach().cpu(), str(prompts[i]), seeds[i]))
        while len(self._buf) >= self.shard_size:
            self._flush(self.shard_size)

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if self.index["text_dim"] is None:
            self.index["text_dim"] = int(tokens.shape[-1])
        elif tokens.shape[-1] != self.index["text_dim"]:
            raise InputError(f"text embedding width {tokens.shape[-1]} differs from the data set's {self.index['text_dim']}")
        text_len = self.index["text_len"]
        if text_len is not None and tokens.shape[0] > text_len:
            raise InputError(f"a context has {tokens.shape[0]} tokens, more than text_len {text_len}")

    def set_negative(self, negative_context: torch.Tensor, negative_prompt: str = "") -> None:
        """Store the negative prompt's embedding (Tensor[L, D] or [1, L, D]) once for the whole set."""
        tokens = trim_context(negative_context.reshape(-1, negative_context.shape[-1]))
        self._check_tokens(tokens)
        atomic_save_safetensors({"negative_context": tokens.to(self.dtype)}, self.folder / NEGATIVE,
                                {"format": FORMAT, "negative_prompt": negative_prompt})
        self.index["has_negative"] = True
        self.index["negative_prompt"] = negative_prompt

    def _flush(self, n: int) -> None:
        items, self._buf = self._buf[:n], self._buf[n:]
        k = len(self.index["shards"])
        name = f"shard-{k:05d}.safetensors"
        tensors = {
            "latents": torch.stack([it[0] for it in items]).to(self.dtype),
            "context": torch.cat([it[1] for it in items]).to(self.dtype),
            "context_lengths": torch.tensor([it[1].shape[0] for it in items], dtype=torch.int64),
            "seeds": torch.tensor([it[3] for it in items], dtype=torch.int64),
        }
        meta = {"format": FORMAT, "prompts": json.dumps([it[2] for it in items], ensure_ascii=False)}
        atomic_save_safetensors(tensors, self.folder / name, meta)
        self.index["shards"].append({"file": name, "count": len(items)})
        self.index["num_samples"] += len(items)
        longest = int(tensors["context_lengths"].max())
        self.index["text_len"] = max(self.index["text_len"] or 0, longest)
        atomic_write_text(self.folder / INDEX, json.dumps(self.index, indent=1))

    def close(self) -> Path:
        """Write the last (partial) shard and mark the set complete. Returns the folder."""
        if self._buf:
            self._flush(len(self._buf))
        if self.index["num_samples"] == 0:
            raise InputError("no samples were written: give at least one prompt/latent")
        self.index["complete"] = True
        atomic_write_text(self.folder / INDEX, json.dumps(self.index, indent=1))
        return self.folder


def read_index(folder) -> dict:
    """The validated index of a data folder; ConfigError says what is missing and how to make it."""
    folder = Path(folder) if folder else None
    if folder is None or not folder.is_dir():
        raise ConfigError(
            f"data folder {str(folder) if folder else '(empty)'!r} does not exist: make one with "
            "`tmd make-data --out FOLDER ...` and set `data:` (or --data) to it"
        )
    path = folder / INDEX
    if not path.is_file():
        raise ConfigError(f"data folder {folder} has no {INDEX}: it is not a `tmd make-data` folder")
    try:
        index = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}): the data folder is damaged; make it again") from e
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        index = index if isinstance(index, dict) else {}
        raise ConfigError(f"{path} has format {index.get('format')!r}, expected {FORMAT!r}")
    if not index.get("num_samples"):
        raise ConfigError(f"data folder {folder} holds no samples")
    missing = [s["file"] for s in index["shards"] if not (folder / s["file"]).is_file()]
    if missing:
        raise ConfigError(f"data folder {folder} misses shards {missing[:3]} listed in {INDEX}")
    return index


class ShardDataset:
    """Random access to the samples of a data folder (shards opened lazily, a few kept open)."""

    def __init__(self, folder, max_open: int = 8):
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        self.text_len = int(self.index["text_len"])
        self.latent_shape = tuple(self.index["latent_shape"])
        self.text_dim = int(self.index["text_dim"])
        self._starts = [0]
        for s in self.index["shards"]:
            self._starts.append(self._starts[-1] + int(s["count"]))
        self._open: OrderedDict[int, tuple] = OrderedDict()
        self._max_open = max_open
        self.negative_context = None  # Tensor[1, text_len, D] (zeros when the set has none)
        if self.index.get("has_negative"):
            with safe_open(str(self.folder / NEGATIVE), framework="pt") as f:
                tokens = f.get_tensor("negative_context").float()
            self.negative_context = pad_context(tokens, max(self.text_len, tokens.shape[0]))[None]
            self.text_len = self.negative_context.shape[1]
        else:
            self.negative_context = torch.zeros(1, self.text_len, self.text_dim)

    def __len__(self) -> int:
        return self._starts[-1]

    def _shard(self, k: int):
        if k in self._open:
            self._open.move_to_end(k)
            return self._open[k]
        f = safe_open(str(self.folder / self.index["shards"][k]["file"]), framework="pt")
        lengths = f.get_tensor("context_lengths")
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).tolist()
        prompts = json.loads(f.metadata().get("prompts", "[]"))
        self._open[k] = (f, offsets, prompts)
        if len(self._open) > self._max_open:
            self._open.popitem(last=False)
        return self._open[k]

    def sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """(latent Tensor[C, F, H, W] float32, context Tensor[text_len, D] float32, prompt) of sample i."""
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range 0..{len(self) - 1}")
        k = bisect.bisect_right(self._starts, i) - 1
        f, offsets, prompts = self._shard(k)
        j = i - self._starts[k]
        latent = f.get_slice("latents")[j : j + 1][0].float()
        tokens = f.get_slice("context")[offsets[j] : offsets[j + 1]].float()
        return latent, pad_context(tokens, self.text_len), prompts[j] if j < len(prompts) else ""

    def seed(self, i: int) -> int:
        """The noise seed sample i was generated from (-1 for user-supplied latents)."""
        k = bisect.bisect_right(self._starts, i) - 1
        j = i - self._starts[k]
        return int(self._shard(k)[0].get_slice("seeds")[j : j + 1][0])

    def batch(self, indices) -> dict:
        """A training batch: latents [B, C, F, H, W], context [B, L, D], negative_context [1, L, D],
        seeds [B] (noise seeds, -1 unknown), indices [B], prompts (list of str)."""
        items = [self.sample(int(i)) for i in indices]
        return {
            "latents": torch.stack([it[0] for it in items]),
            "context": torch.stack([it[1] for it in items]),
            "negative_context": self.negative_context,
            "prompts": [it[2] for it in items],
            "seeds": torch.as_tensor([self.seed(int(i)) for i in indices], dtype=torch.int64),
            "indices": torch.as_tensor([int(i) for i in indices], dtype=torch.int64),
        }


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"tmd-data:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class ShardReader:
    """Endless shuffled batches, split across processes, with an exactly restorable position.

    Each epoch is one permutation seeded by (seed, epoch); a global batch is the next `batch_size`
    entries of that stream (crossing epochs when needed) and process `rank` takes its contiguous
    `batch_size / world_size` slice. The position is the number of samples consumed.
    """

    def __init__(self, dataset: ShardDataset, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        if batch_size % world_size:
            raise ConfigError(batch_divisibility_message(batch_size, world_size))
        self.dataset, self.batch_size, self.seed = dataset, int(batch_size), int(seed)
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.consumed = 0
        self._perm: tuple[int, list[int]] | None = None

    def _order(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            n = len(self.dataset)
            if self.shuffle:
                g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
                order = torch.randperm(n, generator=g).tolist()
            else:
                order = list(range(n))
            self._perm = (epoch, order)
        return self._perm[1]

    def next_indices(self) -> list[int]:
        """This process's sample indices of the next global batch (advances the position)."""
        n = len(self.dataset)
        positions = range(self.consumed, self.consumed + self.batch_size)
        per = self.batch_size // self.world_size
        mine = list(positions)[self.rank * per : (self.rank + 1) * per]
        self.consumed += self.batch_size
        return [self._order(p // n)[p % n] for p in mine]

    def next_batch(self) -> dict:
        return self.dataset.batch(self.next_indices())

    def state_dict(self) -> dict:
        return {"seed": self.seed, "consumed": self.consumed, "num_samples": len(self.dataset),
                "batch_size": self.batch_size, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        if state["num_samples"] != len(self.dataset):
            raise ConfigError(
                f"the checkpoint was trained on {state['num_samples']} samples, the data folder now holds "
                f"{len(self.dataset)}: resume with the same data set"
            )
        self.seed, self.consumed, self.shuffle = int(state["seed"]), int(state["consumed"]), bool(state["shuffle"])


def batch_divisibility_message(batch_size: int, world_size: int) -> str:
    ok = max(world_size, (batch_size // world_size) * world_size)
    return (
        f"batch_size {batch_size} is not divisible by the {world_size} processes: use a multiple of "
        f"{world_size} (e.g. {ok}) — batch_size is the global batch, split evenly across processes"
    )
