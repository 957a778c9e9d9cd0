"""Distillation of a TMD student from a Wan teacher (docs/method.md §4–6): data, configs, the training loop."""

from .config import TrainConfig, check_config, load_config, preset, to_yaml
from .data import ShardDataset, ShardReader, ShardWriter, read_index
from .loop import run_distill
from .make_data import TextEncoder, make_data, write_latents
from .previews import OnPreview, PreviewPrompts

__all__ = [
    "OnPreview",
    "PreviewPrompts",
    "ShardDataset",
    "ShardReader",
    "ShardWriter",
    "TextEncoder",
    "TrainConfig",
    "check_config",
    "load_config",
    "make_data",
    "preset",
    "read_index",
    "run_distill",
    "to_yaml",
    "write_latents",
]
