"""`tmd make-data`: generate the training set with the teacher (docs/method.md §6), or pack user latents."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import ConfigError, TMDError


def register(sub) -> None:
    p = sub.add_parser(
        "make-data", help="generate training shards (latents + text embeddings + prompts) with the teacher",
        description="Prompts come from --prompts (one per line) encoded by --text-encoder, or from "
        "--embeddings (a safetensors file with 'context' [N, L, D], optional 'negative_context' and a "
        "'prompts' JSON list in its metadata). --latents packs user-supplied latents instead of sampling.",
    )
    p.add_argument("--out", required=True, help="output data folder")
    p.add_argument("--teacher", help="Wan teacher checkpoint (any layout tmd reads); not needed with --latents")
    p.add_argument("--prompts", help="text file, one prompt per line (a toy teacher encodes them itself: no "
                   "--text-encoder needed)")
    p.add_argument("--text-encoder", help="local transformers folder of the umt5 (or t5) encoder + tokenizer")
    p.add_argument("--embeddings", help="precomputed embeddings (.safetensors with 'context')")
    p.add_argument("--latents", help="user latents (.safetensors with 'latents' [N, C, F, H, W], normalised)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt (default: Wan2.1's own)")
    p.add_argument("--latent-shape", help="C,F,H,W of a latent (default: Wan2.1's 16,21,60,104 = 81x480x832; a toy "
                   "teacher's 16,2,4,4)")
    p.add_argument("--steps", type=int, default=50, help="teacher Euler steps")
    p.add_argument("--shift", type=float, help="teacher time shift (default: 8 for Wan2.1, 3 for a toy teacher)")
    p.add_argument("--guidance", type=float, help="teacher CFG scale (default: 5 for Wan2.1, 4 for a toy teacher)")
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

    from ..validation import check_safetensors_file

    entries, meta = check_safetensors_file("--embeddings", path, "safetensors file with a 'context' tensor",
                                           error=ConfigError)
    if "context" not in entries:
        raise ConfigError(f"--embeddings: {path} has no 'context' tensor (found {sorted(entries)[:6]}): save the "
                          "prompts' embeddings under 'context', shape [prompts, tokens, text_dim]")
    if len(entries["context"][0]) != 3 or min(entries["context"][0]) < 1:
        raise ConfigError(f"--embeddings: 'context' has shape {list(entries['context'][0])}, expected [prompts, tokens, "
                          "text_dim] with at least one of each")
    with safe_open(str(path), framework="pt") as f:
        context = f.get_tensor("context").float()
        neg = f.get_tensor("negative_context").float() if "negative_context" in entries else None
    try:
        prompts = json.loads(meta["prompts"]) if "prompts" in meta else None
    except ValueError as e:
        raise ConfigError(f"--embeddings: its 'prompts' metadata is not a JSON list ({e})") from e
    if prompts is not None and (not isinstance(prompts, list) or len(prompts) != context.shape[0]):
        raise ConfigError(f"--embeddings: its 'prompts' metadata must list one text per embedding ({context.shape[0]})")
    return list(context), neg, prompts, meta.get("negative_prompt", "")


def check_args(args) -> dict:
    """The flags and files of `tmd make-data`, checked before the teacher or a text encoder is loaded.

    Returns {"teacher": transformer config or None, "shape": (C, F, H, W) or None, "toy": bool}."""
    from ..validation import (
        MAX_STEPS,
        check_float,
        check_input_file,
        check_int,
        check_output_folder,
        check_seed,
        parse_shape,
    )

    E = ConfigError
    check_int("--batch-size", args.batch_size, 1, 4096, error=E)
    check_int("--shard-size", args.shard_size, 1, 100000, error=E)
    check_int("--steps", args.steps, 1, MAX_STEPS, error=E)
    check_int("--text-len", args.text_len, 1, 4096, error=E)
    if args.shift is not None:
        check_float("--shift", args.shift, 0.0, 1000.0, lo_open=True, error=E)
    if args.guidance is not None:
        check_float("--guidance", args.guidance, 0.0, 100.0, hint="1 turns classifier-free guidance off", error=E)
    check_seed("--seed", args.seed, error=E)
    out = check_output_folder("--out", args.out, error=E)
    if (out / "index.json").exists() and not args.resume:
        raise ConfigError(f"--out: {out} already holds a data set: choose another folder, or pass --resume to "
                          "continue an unfinished one")
    if args.prompts:
        check_input_file("--prompts", args.prompts, "text file of prompts", error=E)
    if args.embeddings:
        from ..validation import check_safetensors_file

        check_safetensors_file("--embeddings", args.embeddings, "safetensors file with a 'context' tensor", error=E)
    if args.latents:
        from ..validation import check_safetensors_file

        entries, _ = check_safetensors_file("--latents", args.latents, "safetensors file with 'latents'", error=E)
        if "latents" not in entries or len(entries["latents"][0]) != 5:
            raise ConfigError(f"--latents: {args.latents} needs a 'latents' tensor [N, C, F, H, W]")
        return {"teacher": None, "shape": None, "toy": False}
    if not args.teacher:
        raise ConfigError("--teacher is required to generate latents (or pass --latents)")
    from ..errors import CheckpointError
    from ..loading import describe_checkpoint
    from ..worlds import is_toy_config

    try:
        info = describe_checkpoint(args.teacher)
    except CheckpointError as e:
        raise ConfigError(f"--teacher: {e}") from e
    if info["kind"] == "tmd":
        raise ConfigError(f"--teacher: {args.teacher} is a TMD student; the data is made by the Wan teacher")
    tcfg = info["transformer_config"]
    toy = is_toy_config(tcfg)
    if args.latent_shape is None:
        from ..worlds import TOY_LATENT_CHANNELS

        shape = (TOY_LATENT_CHANNELS, 2, 4, 4) if toy else (16, 21, 60, 104)
    else:
        shape = parse_shape("--latent-shape", args.latent_shape)
    try:
        from ..validation import check_latent_shape

        check_latent_shape("--latent-shape", shape, tcfg, args.batch_size)
    except TMDError as e:
        raise ConfigError(str(e)) from e
    if args.text_encoder:
        check_input_file("--text-encoder", f"{args.text_encoder}/config.json", "text encoder folder's config.json",
                         error=E)
    return {"teacher": tcfg, "shape": shape, "toy": toy}


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from ..training.make_data import WAN_NEGATIVE_PROMPT, TextEncoder, make_data, read_prompts, write_latents

    facts = check_args(args)
    defaults = (4.0, 3.0) if facts["toy"] else (5.0, 8.0)  # (CFG, shift): the toy teacher's own, or Wan2.1's
    guidance = defaults[0] if args.guidance is None else args.guidance
    shift = defaults[1] if args.shift is None else args.shift
    if args.resume:
        from ..checkpoint import remove_stale_temporaries

        remove_stale_temporaries(args.out)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    prompts = read_prompts(args.prompts) if args.prompts else None
    negative_prompt = WAN_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt
    if facts["toy"] and not args.embeddings and not args.text_encoder:  # the toy world's encoder needs no weights
        from ..toy.demo import check_toy_prompts
        from ..toy.text import ToyTextEncoder

        if not prompts:
            raise ConfigError("--prompts: a toy teacher needs a text file of toy prompts, one per line")
        for i in range(0, len(prompts), 64):
            check_toy_prompts(f"--prompts ({args.prompts})", prompts[i : i + 64])
        enc = ToyTextEncoder()
        contexts, negative = list(enc.encode(prompts)), enc.null_context(1)[0]
        negative_prompt = ""
    elif args.embeddings:
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
    from ..validation import check_seed

    check_seed("--seed", args.seed, count=len(contexts), error=ConfigError)  # sample i uses seed + i
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

        shape = facts["shape"]
        widths = {int(c.shape[-1]) for c in contexts}
        if widths != {facts["teacher"]["text_dim"]}:
            raise ConfigError(f"the prompt embeddings are {sorted(widths)} wide, the teacher reads "
                              f"{facts['teacher']['text_dim']}-wide text: encode them with the teacher's text encoder")
        teacher = load_teacher(args.teacher, device=args.device)
        source = {"teacher": Path(args.teacher).name, "teacher_sha256": teacher_sha256(args.teacher)}
        bar = tqdm(total=len(contexts), desc="teacher samples", unit="sample")
        out = make_data(
            teacher, args.out, contexts=contexts, prompts=prompts, negative_context=negative,
            negative_prompt=negative_prompt, latent_shape=shape, steps=args.steps, shift=shift,
            guidance_scale=guidance, seed=args.seed, batch_size=args.batch_size, shard_size=args.shard_size,
            text_len=args.text_len if args.text_encoder else None, dtype=dtype, source=source,
            resume=args.resume, progress=lambda done, total: bar.update(done - bar.n),
        )
        bar.close()
        n = len(contexts)
    seconds = time.perf_counter() - t0
    summary = {"out": str(out), "samples": n, "seconds": round(seconds, 2)}
    print(json.dumps(summary) if args.json else f"make-data: {n} samples in {seconds:.1f} s -> {out}")
    return 0
