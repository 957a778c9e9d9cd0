"""`tmd generate`: sample latents from a TMD student or a Wan teacher, and for the toy world a video too.

The text comes from `--context` (a safetensors file with `context` [B, L, text_dim]) or, for toy-world
models, from `--prompt` (the toy text encoder needs no weights). Every input is checked against the
checkpoint's header before anything is loaded (`--dry-run` stops there). Latents are written in the
model's normalised space, or with `--vae-space` in Wan2.1's raw VAE space (tmd_core/worlds.py), which a
Wan2.1 VAE decodes as it is (ComfyUI's VAEDecode, diffusers' AutoencoderKLWan). Toy latents are also
decoded with the toy VAE into an MP4 (or GIF) next to them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from ..errors import InputError
from ..validation import MAX_STEPS

WAN_DEFAULTS = {"guidance": 5.0, "shift": 8.0}  # Wan2.1's teacher sampling (CFG 5, shift 8)


def register(sub) -> None:
    p = sub.add_parser(
        "generate", help="sample latents (and a toy video) with a TMD student or a Wan teacher",
        description="Sample with a tmd/1 student (its trained outer x inner steps unless given), a Wan teacher "
        "(Euler with CFG), or a teacher split into an untrained student (--head-blocks). Toy-world models take "
        "--prompt and also write a video; Wan models take --context (umt5 embeddings).")
    p.add_argument("checkpoint", help="tmd/1 checkpoint, a TMD patch (with --teacher) or a Wan teacher (any layout)")
    p.add_argument("--teacher", help="the Wan teacher a TMD patch applies to (tmd extract-lora; docs/patches.md)")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--context", help="safetensors file with 'context' [B, L, text_dim] (and optionally "
                      "'negative_context', used for the teacher's CFG)")
    text.add_argument("--prompt", action="append", help="a toy-world prompt, e.g. 'a red circle moving left fast' "
                      "(repeatable: one video each); toy models only")
    p.add_argument("--latent-shape", help="C,F,H,W of the latent (default: the toy world's 16,2,4,4 for toy models, "
                   "else C,3,8,8 with the model's C)")
    p.add_argument("--seed", type=int, default=0, help="noise seed, 0 to 2**32-1 (default 0)")
    p.add_argument("--outer-steps", type=int, help=f"TMD transitions M, 1-{MAX_STEPS} (default: the trained value)")
    p.add_argument("--inner-steps", type=int, help=f"flow-head steps N, 1-{MAX_STEPS} (default: the trained value)")
    p.add_argument("--head-blocks", type=int, help="split a plain teacher into an untrained TMD student with H blocks")
    p.add_argument("--teacher-steps", type=int, help=f"Euler steps when sampling a teacher, 1-{MAX_STEPS} (default 50)")
    p.add_argument("--guidance", type=float, help="teacher CFG scale (needs a negative context; default: 5 for Wan, "
                   "the toy teacher's 4 for toy models)")
    p.add_argument("--shift", type=float, help="teacher time shift (default: 8 for Wan, 3 for toy models)")
    p.add_argument("--out", default="latents.safetensors", help="where to write the latents (default %(default)s)")
    p.add_argument("--video", help="toy models: where to write the video (.mp4 or .gif; default: --out with .mp4)")
    p.add_argument("--no-video", action="store_true", help="toy models: write the latents only")
    p.add_argument("--vae", help="toy models: the toy VAE to decode with (default: the shipped one)")
    p.add_argument("--vae-space", action="store_true",
                   help="write Wan2.1 latents de-normalised (x * std + mean), as a Wan2.1 VAE decodes them")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.add_argument("--dry-run", action="store_true", help="check every input against the checkpoint's header, print "
                   "the plan, and exit without loading or sampling")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


@dataclasses.dataclass
class Plan:
    """Everything `run` will do, decided from the arguments and file headers only."""

    mode: str  # "tmd" | "patch" | "split" | "teacher"
    info: dict  # describe_checkpoint(checkpoint)
    toy: bool
    shape: tuple  # (C, F, H, W)
    batch: int
    prompts: list | None
    context_file: Path | None
    out: Path
    video: Path | None
    vae: Path | None
    outer_steps: int | None = None
    inner_steps: int | None = None
    teacher_steps: int = 50
    guidance: float = 1.0
    shift: float = 8.0


def _forbid(args, names: tuple[str, ...], why: str) -> None:
    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]
    if given:
        raise InputError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply: {why}")


def _context_header(path: str, text_dim: int) -> tuple[int, bool]:
    """(batch, has negative) of a context file, checked from its header."""
    from ..validation import check_safetensors_file

    entries, _ = check_safetensors_file("--context", path, "safetensors file with a 'context' tensor")
    if "context" not in entries:
        raise InputError(f"--context: {Path(path).name} has no 'context' tensor (found {sorted(entries)[:6]}): save "
                         "the text embeddings under the key 'context', shape [batch, tokens, text_dim]")
    for key in ("context", "negative_context"):
        if key in entries:
            shape, dtype = entries[key]
            if len(shape) not in (2, 3) or min(shape, default=0) < 1 or shape[-1] != text_dim:
                raise InputError(f"--context: '{key}' has shape {list(shape)}; this model needs [batch, tokens, "
                                 f"{text_dim}] (or [tokens, {text_dim}]) with at least one token")
            if not dtype.startswith(("F", "BF")):
                raise InputError(f"--context: '{key}' has dtype {dtype}, expected floating-point embeddings")
    shape = entries["context"][0]
    return (shape[0] if len(shape) == 3 else 1), "negative_context" in entries


def _read_context(path: Path):
    """(context Tensor[B, L, D], negative Tensor[1 or B, L', D] or None), float32, checked to be finite."""
    from safetensors.torch import load_file

    from ..validation import check_finite

    tensors = load_file(str(path))
    out = []
    for key in ("context", "negative_context"):
        t = tensors.get(key)
        if t is not None:
            t = (t[None] if t.ndim == 2 else t).float()
            check_finite(f"--context: '{key}'", t, "re-encode the prompt; the file may be corrupt")
        out.append(t)
    return out[0], out[1]


def plan(args) -> Plan:
    """The validation layer of `tmd generate`: every flag and file header, before anything is loaded."""
    from ..loading import describe_checkpoint
    from ..validation import (
        check_float,
        check_int,
        check_latent_shape,
        check_output_file,
        check_safetensors_file,
        check_seed,
        parse_shape,
    )
    from ..worlds import WAN21_CHANNELS, is_toy_config

    check_seed("--seed", args.seed)
    for flag in ("outer_steps", "inner_steps", "teacher_steps"):
        if getattr(args, flag) is not None:
            check_int(f"--{flag.replace('_', '-')}", getattr(args, flag), 1, MAX_STEPS,
                      hint="leave it out to use the default" if flag == "teacher_steps" else
                      "leave it out to use the checkpoint's trained value")
    if args.guidance is not None:
        check_float("--guidance", args.guidance, 0.0, 100.0, hint="1 turns classifier-free guidance off")
    if args.shift is not None:
        check_float("--shift", args.shift, 0.0, 1000.0, lo_open=True)
    info = describe_checkpoint(args.checkpoint)
    cfg = info["transformer_config"]
    toy = is_toy_config(cfg)
    layers = info["num_layers"]
    if args.teacher is not None and info["kind"] != "tmd-patch":
        raise InputError(f"--teacher is the teacher of a TMD patch; {Path(args.checkpoint).name} is not a patch: leave "
                         "--teacher out")
    if info["kind"] == "tmd-patch":
        if args.teacher is None:
            raise InputError(f"{Path(args.checkpoint).name} is a TMD patch: give the teacher it applies to with --teacher")
        from ..patch import check_same_architecture
        from ..patch_file import check_teacher_info

        t_info = describe_checkpoint(args.teacher)
        check_teacher_info(t_info, Path(args.teacher).name, "--teacher:", InputError)
        check_same_architecture(cfg, t_info["transformer_config"], Path(args.checkpoint).name, Path(args.teacher).name)
    if info["kind"] in ("tmd", "tmd-patch"):
        mode = "tmd" if info["kind"] == "tmd" else "patch"
        if args.head_blocks is not None:
            raise InputError(f"--head-blocks splits a plain teacher; {Path(args.checkpoint).name} is a TMD student "
                             f"(H = {info['head_blocks']} of {layers}): leave --head-blocks out")
        _forbid(args, ("teacher_steps", "guidance", "shift"), "they set teacher sampling; a TMD student samples "
                "without CFG with --outer-steps/--inner-steps")
    elif args.head_blocks is not None:
        mode = "split"
        check_int("--head-blocks", args.head_blocks, 1, layers - 1,
                  hint=f"the teacher has {layers} blocks and the backbone needs at least one")
        _forbid(args, ("teacher_steps", "guidance", "shift"), "--head-blocks samples an untrained TMD student, "
                "without CFG")
    else:
        mode = "teacher"
        _forbid(args, ("outer_steps", "inner_steps"), f"{Path(args.checkpoint).name} is a plain Wan model (a teacher "
                "or a DMD2-v student): sample it with --teacher-steps, or split it with --head-blocks")
    if args.vae_space and (toy or cfg["in_channels"] != WAN21_CHANNELS):
        raise InputError(f"--vae-space de-normalises Wan2.1 latents; this model has {cfg['in_channels']} latent "
                         f"channels and {cfg['text_dim']}-wide text (toy-world latents are decoded into a video "
                         "instead): leave --vae-space out")
    prompts, context_file, negative = None, None, False
    if args.prompt is not None:
        if not toy:
            raise InputError(f"--prompt encodes toy-world prompts; this model takes {cfg['text_dim']}-wide text "
                             "embeddings: give --context (umt5 embeddings for Wan2.1, e.g. from tmd make-data)")
        from ..toy.demo import check_toy_prompts

        prompts = check_toy_prompts("--prompt", args.prompt)
        batch, negative = len(prompts), True  # the toy teacher's negative is the empty prompt
    else:
        batch, negative = _context_header(args.context, cfg["text_dim"])
        context_file = Path(args.context)
        _read_context(context_file)  # small: its values are checked here too (NaN/inf), not after loading the model
    if mode == "teacher" and args.guidance not in (None, 1.0) and not negative:
        raise InputError(f"--guidance {args.guidance:g} needs a negative context: add 'negative_context' to "
                         f"{Path(args.context).name}, or pass --guidance 1")
    if args.latent_shape is not None:
        shape = parse_shape("--latent-shape", args.latent_shape)
    elif toy:
        from ..toy.latent import LATENT_SHAPE

        shape = LATENT_SHAPE
    else:
        pt, ph, pw = cfg["patch_size"]
        shape = (cfg["in_channels"], -(-3 // pt) * pt, -(-8 // ph) * ph, -(-8 // pw) * pw)
    check_latent_shape("--latent-shape", shape, cfg, batch)
    out = check_output_file("--out", args.out, force=args.force)
    if out.suffix != ".safetensors":
        raise InputError(f"--out: {out.name} must end in .safetensors (the latents are a safetensors file)")
    video = vae = None
    if args.video is not None or args.vae is not None:
        if not toy:
            raise InputError("--video/--vae decode toy-world latents; decode Wan2.1 latents with a Wan2.1 VAE "
                             "(ComfyUI's VAEDecode; write them with --vae-space)")
    if toy and not args.no_video:
        video = check_output_file("--video", args.video or out.with_suffix(".mp4"), force=args.force)
        if video.suffix not in (".mp4", ".gif"):
            raise InputError(f"--video: {video.name} must end in .mp4 or .gif")
        if video == out:
            raise InputError("--video and --out name the same file: choose two names")
        from ..toy.autoencoder import FORMAT as VAE_FORMAT
        from ..toy.shipped import ASSETS

        vae = Path(args.vae) if args.vae else ASSETS / "toy_vae.safetensors"
        if not args.vae and not vae.is_file():
            raise InputError(f"--vae: the shipped toy VAE is not installed ({vae}): run `tmd toy train --install`, "
                             "pass --vae PATH, or --no-video")
        _, meta = check_safetensors_file("--vae", vae, "toy VAE")
        if meta.get("format") != VAE_FORMAT:
            raise InputError(f"--vae: {vae.name} is not a toy VAE (format {meta.get('format')!r}, expected "
                             f"{VAE_FORMAT!r})")
    p = Plan(mode, info, toy, tuple(shape), batch, prompts, context_file, out, video, vae,
             outer_steps=args.outer_steps, inner_steps=args.inner_steps)
    if mode == "teacher":
        toy_defaults = {"guidance": 4.0, "shift": 3.0}  # the toy teacher's own (tmd_core.toy.teacher)
        defaults = toy_defaults if toy else WAN_DEFAULTS
        p.teacher_steps = args.teacher_steps or 50
        p.guidance = (args.guidance if args.guidance is not None else defaults["guidance"]) if negative else 1.0
        p.shift = args.shift if args.shift is not None else defaults["shift"]
    return p


def _describe(p: Plan, args) -> str:
    what = {"tmd": "TMD student", "patch": f"TMD patch on {args.teacher}", "split": f"teacher split at H = {args.head_blocks} (untrained)",
            "teacher": f"Wan model, {p.teacher_steps} Euler steps, CFG {p.guidance:g}, shift {p.shift:g}"}[p.mode]
    text = f"prompts {p.prompts}" if p.prompts is not None else f"context {p.context_file}"
    files = f"{p.out}" + (f" and {p.video}" if p.video else "")
    return f"plan: {what}; {text}; latents {p.batch}x{'x'.join(map(str, p.shape))}, seed {args.seed} -> {files}"


def run(args) -> int:
    p = plan(args)
    if args.dry_run:
        print(_describe(p, args))
        print("# inputs ok")
        return 0
    from tqdm.auto import tqdm

    from ..checkpoint import atomic_save_safetensors, load_tmd
    from ..loading import load_teacher
    from ..model import TMDModel
    from ..noise import make_noise
    from ..sampler import sample_teacher, sample_tmd
    from ..worlds import wan21_to_vae_space

    t0 = time.perf_counter()
    if p.prompts is not None:
        from ..toy.text import ToyTextEncoder

        enc = ToyTextEncoder()
        context, negative = enc.encode(p.prompts), enc.null_context(1)
    else:
        context, negative = _read_context(p.context_file)
    noise = make_noise((p.batch, *p.shape), seed=args.seed)
    if p.mode == "tmd":
        model = load_tmd(args.checkpoint)
    elif p.mode == "patch":
        from ..patch_file import load_patched

        model = load_patched(args.checkpoint, args.teacher)
    elif p.mode == "split":
        model = TMDModel.from_teacher(load_teacher(args.checkpoint), head_blocks=args.head_blocks)
    else:
        model = load_teacher(args.checkpoint)
    load_seconds = time.perf_counter() - t0
    if p.mode in ("tmd", "patch", "split"):
        trained = model.tmd_config.schedule
        sched = dataclasses.replace(trained, outer_steps=p.outer_steps or trained.outer_steps,
                                    inner_steps=p.inner_steps or trained.inner_steps)
        total = sched.outer_steps * sched.inner_steps
        bar = tqdm(total=total, desc="sampling", unit="step", leave=False, disable=total < 20)
        t0 = time.perf_counter()
        x = sample_tmd(model, noise, context, sched,
                       callback=lambda i, j, _x: bar.update(i * sched.inner_steps + j + 1 - bar.n))
        nfe = model.effective_nfe(sched.outer_steps, sched.inner_steps)
        what = f"TMD outer {sched.outer_steps} x inner {sched.inner_steps}"
    else:
        bar = tqdm(total=p.teacher_steps, desc="sampling", unit="step", leave=False, disable=p.teacher_steps < 20)
        t0 = time.perf_counter()
        x = sample_teacher(model, noise, context, steps=p.teacher_steps, shift=p.shift, guidance_scale=p.guidance,
                           negative_context=negative if p.guidance != 1.0 else None,
                           callback=lambda i, j, _x: bar.update(1))
        nfe = p.teacher_steps * (2 if p.guidance != 1.0 else 1)
        what = f"teacher {p.teacher_steps} steps, CFG {p.guidance:g}"
    sample_seconds = time.perf_counter() - t0
    bar.close()
    space = "normalised"
    if args.vae_space:
        x, space = wan21_to_vae_space(x), "wan2.1-vae"
    atomic_save_safetensors({"latents": x}, p.out, {"latent_space": space})
    files = [str(p.out)]
    if p.video is not None:
        from ..toy.codec import decode_latents
        from ..toy.video_io import make_grid, write_video

        clips = decode_latents(x, str(p.vae))
        labels = p.prompts or [f"sample {i}" for i in range(p.batch)]
        files.append(write_video(p.video, make_grid([(what, clips)], column_labels=labels), fps=6))
    summary = {"what": what, "effective_nfe": round(nfe, 4), "load_seconds": round(load_seconds, 3),
               "sample_seconds": round(sample_seconds, 4), "shape": list(x.shape), "latent_space": space,
               "out": str(p.out), "files": files}
    print(json.dumps(summary) if args.json else
          f"{what}: effective NFE {nfe:.2f}, sampling {sample_seconds:.3f} s (loading {load_seconds:.2f} s), "
          f"latents {tuple(x.shape)} -> {', '.join(files)}")
    return 0
