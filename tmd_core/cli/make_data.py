"""`tmd make-data`: generate the training set with the teacher (docs/method.md §6), or pack user latents."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser(
        "make-data", help="generate training shards (latents + text embeddings + prompts) with the teacher",
        description="Prompts come from --prompts (one per line) encoded by --text-encoder, or from "
        "--embeddings (a safetensors file with 'context' [N, L, D], optional 'negative_context' and a "
        "'prompts' JSON list in its metadata). --latents packs user-supplied latents instead of sampling.",
    )
    p.add_argument("--out", required=True, help="output data folder")
    p.add_argument("--teacher", help="Wan teacher checkpoint (any layout tmd reads); not needed with --latents")
    p.add_argument("--prompts", help="text file, one prompt per line")
    p.add_argument("--text-encoder", help="local transformers folder of the umt5 (or t5) encoder + tokenizer")
    p.add_argument("--embeddings", help="precomputed embeddings (.safetensors with 'context')")
    p.add_argument("--latents", help="user latents (.safetensors with 'latents' [N, C, F, H, W], normalised)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt (default: Wan2.1's own)")
    p.add_argument("--latent-shape", default="16,21,60,104", help="C,F,H,W of a latent (default: 81x480x832)")
    p.add_argument("--steps", type=int, default=50, help="teacher Euler steps")
    p.add_argument("--shift", type=float, default=8.0, help="teacher time shift")
    p.add_argument("--guidance", type=float, default=5.0, help="teacher CFG scale")
    p.add_argument("--seed", type=int, default=0, help="sample i uses noise seed SEED + i")
    p.add_argument("--batch-size", type=int, default=1, help="prompts per teacher call")
    p.add_argument("--shard-size", type=int, default=64, help="samples per shard file")
    p.add_argument("--text-len", type=int, default=512, help="tokens per prompt (Wan: 512)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="storage dtype of the shards")
    p.add_argument("--device", default="cpu", help="device of the teacher and encoder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted folder with the same settings")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _load_embeddings(path):
    from safetensors import safe_open

    if not Path(path).is_file():
        raise ConfigError(f"no embeddings file at {path}")
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        if "context" not in keys:
            raise ConfigError(f"{path} has no 'context' tensor (found {sorted(keys)})")
        context = f.get_tensor("context").float()
        neg = f.get_tensor("negative_context").float() if "negative_context" in keys else None
        meta = f.metadata() or {}
    prompts = json.loads(meta["prompts"]) if "prompts" in meta else None
    return list(context), neg, prompts, meta.get("negative_prompt", "")


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from ..training.make_data import WAN_NEGATIVE_PROMPT, TextEncoder, make_data, read_prompts, write_latents

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    prompts = read_prompts(args.prompts) if args.prompts else None
    negative_prompt = WAN_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt
    if args.embeddings:
        contexts, negative, emb_prompts, emb_neg_prompt = _load_embeddings(args.embeddings)
        prompts = prompts or emb_prompts
        negative_prompt = emb_neg_prompt if args.negative_prompt is None else negative_prompt
    elif args.text_encoder:
        if not prompts:
            raise ConfigError("--text-encoder needs --prompts (a text file, one prompt per line)")
        encoder = TextEncoder(args.text_encoder, device=args.device, text_len=args.text_len)
        contexts = []
        for i in tqdm(range(0, len(prompts), 8), desc="encode prompts", unit="batch"):
            contexts += encoder.encode(prompts[i : i + 8])
        negative = encoder.encode([negative_prompt])[0]
        del encoder
    else:
        raise ConfigError("give --text-encoder with --prompts, or --embeddings (precomputed text embeddings)")
    t0 = time.perf_counter()
    if args.latents:
        from safetensors.torch import load_file

        latents = load_file(args.latents).get("latents")
        if latents is None:
            raise ConfigError(f"{args.latents} has no 'latents' tensor")
        if latents.shape[0] != len(contexts):
            raise ConfigError(f"{latents.shape[0]} latents but {len(contexts)} text embeddings: counts must match")
        out = write_latents(args.out, latents.float(), contexts, prompts, negative_context=negative,
                            negative_prompt=negative_prompt, shard_size=args.shard_size, dtype=dtype)
        n = latents.shape[0]
    else:
        from ..loading import load_teacher, teacher_sha256

        if not args.teacher:
            raise ConfigError("--teacher is required to generate latents (or pass --latents)")
        try:
            shape = tuple(int(v) for v in args.latent_shape.split(","))
        except ValueError as e:
            raise ConfigError(f"--latent-shape must be C,F,H,W integers, got {args.latent_shape!r}") from e
        teacher = load_teacher(args.teacher, device=args.device)
        source = {"teacher": Path(args.teacher).name, "teacher_sha256": teacher_sha256(args.teacher)}
        bar = tqdm(total=len(contexts), desc="teacher samples", unit="sample")
        out = make_data(
            teacher, args.out, contexts=contexts, prompts=prompts, negative_context=negative,
            negative_prompt=negative_prompt, latent_shape=shape, steps=args.steps, shift=args.shift,
            guidance_scale=args.guidance, seed=args.seed, batch_size=args.batch_size, shard_size=args.shard_size,
            text_len=args.text_len if args.text_encoder else None, dtype=dtype, source=source,
            resume=args.resume, progress=lambda done, total: bar.update(done - bar.n),
        )
        bar.close()
        n = len(contexts)
    seconds = time.perf_counter() - t0
    summary = {"out": str(out), "samples": n, "seconds": round(seconds, 2)}
    print(json.dumps(summary) if args.json else f"make-data: {n} samples in {seconds:.1f} s -> {out}")
    return 0
