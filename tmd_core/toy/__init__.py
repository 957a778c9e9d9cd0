"""The toy world (docs/toy_world.md): procedural text-to-video clips, their text encoder, a small learned
VAE, ToyBench, and video writers — the small world the whole method runs on end to end.

    from tmd_core import toy
    clip = toy.render_clip("a red circle moving left fast", seed=0)   # Tensor[3, 8, 32, 32] in [-1, 1]
    latent = toy.encode_clips(clip[None])                             # Tensor[1, 16, 2, 4, 4] (shipped VAE)
    context = toy.ToyTextEncoder().encode(["a red circle moving left fast", ""])  # Tensor[2, 8, 32]
    result = toy.score_clips(clips, prompts, seeds); print(toy.format_table([{"name": "x", **result}]))
"""

from .bench import (
    BENCH_SEEDS,
    bench_real,
    benchmark_prompts,
    benchmark_set,
    describe_benchmark,
    format_table,
    score_clips,
    write_json,
)
from .codec import decode_latents, encode_clips
from .latent import LATENT_SHAPE, latent_shape, suggested_transformer_config
from .measure import ClipMeasurement, measure_clips
from .text import TEXT_DIM, TEXT_LENGTH, VOCAB, ToyTextEncoder, encode_prompts, tokenize, unknown_words
from .video_io import make_grid, plot_quality_vs_nfe, to_frames, write_gif, write_mp4, write_video
from .world import (
    COLOURS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    DIRECTIONS,
    SHAPES,
    SPEEDS,
    Prompt,
    all_prompts,
    is_held_out,
    prompt_split,
    render_batch,
    render_clip,
    training_batch,
)

__all__ = [
    "BENCH_SEEDS", "COLOURS", "DEFAULT_FRAMES", "DEFAULT_SIZE", "DIRECTIONS", "LATENT_SHAPE", "SHAPES", "SPEEDS",
    "TEXT_DIM", "TEXT_LENGTH", "VOCAB", "ClipMeasurement", "Prompt", "ToyTextEncoder",
    "all_prompts", "bench_real", "benchmark_prompts", "benchmark_set", "decode_latents", "describe_benchmark",
    "encode_clips", "encode_prompts", "format_table", "is_held_out", "latent_shape", "make_grid", "measure_clips",
    "plot_quality_vs_nfe", "prompt_split", "render_batch", "render_clip", "score_clips", "suggested_transformer_config",
    "to_frames", "tokenize", "training_batch", "unknown_words", "write_gif", "write_json", "write_mp4", "write_video",
]
