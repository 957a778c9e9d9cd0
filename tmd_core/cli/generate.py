"""`tmd generate`: sample latents from a TMD or teacher checkpoint given a context tensor file.

Latents are written in the model's normalised space, or with `--vae-space` in Wan2.1's raw VAE space
(tmd_core/worlds.py), which a Wan2.1 VAE decodes as it is (ComfyUI's VAEDecode, diffusers' AutoencoderKLWan).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser("generate", help="sample latents with a TMD student or a Wan teacher")
    p.add_argument("checkpoint", help="tmd/1 checkpoint or a Wan teacher (any supported layout)")
    p.add_argument("--context", required=True, help="safetensors file with 'context' [B, L, text_dim] (and optionally 'negative_context')")
    p.add_argument("--latent-shape", default="16,3,8,8", help="C,F,H,W of the latent (default 16,3,8,8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--outer-steps", type=int, default=None, help="TMD transitions M (default: trained value)")
    p.add_argument("--inner-steps", type=int, default=None, help="flow-head steps N (default: trained value)")
    p.add_argument("--head-blocks", type=int, default=None, help="split a plain teacher into an untrained TMD student")
    p.add_argument("--teacher-steps", type=int, default=50, help="Euler steps when sampling a teacher")
    p.add_argument("--guidance", type=float, default=5.0, help="teacher CFG scale (needs negative_context)")
    p.add_argument("--shift", type=float, default=8.0, help="teacher time shift")
    p.add_argument("--out", default="latents.safetensors", help="where to write the latents")
    p.add_argument("--vae-space", action="store_true",
                   help="write Wan2.1 latents de-normalised (x * std + mean), as a Wan2.1 VAE decodes them")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..checkpoint import load_tmd
    from ..loading import detect_checkpoint_kind, load_teacher
    from ..model import TMDModel
    from ..noise import make_noise
    from ..sampler import sample_teacher, sample_tmd
    from ..worlds import wan21_to_vae_space

    if not Path(args.context).exists():
        raise InputError(f"no context file at {args.context}")
    tensors = load_file(args.context)
    if "context" not in tensors:
        raise InputError(f"{args.context} has no 'context' tensor (found {sorted(tensors)})")
    context, negative = tensors["context"].float(), tensors.get("negative_context")
    try:
        shape = tuple(int(v) for v in args.latent_shape.split(","))
    except ValueError as e:
        raise InputError(f"--latent-shape must be C,F,H,W integers, got {args.latent_shape!r}") from e
    noise = make_noise((context.shape[0], *shape), seed=args.seed)
    kind = detect_checkpoint_kind(args.checkpoint)
    t0 = time.perf_counter()
    if kind == "tmd" or args.head_blocks:
        if kind == "tmd":
            model = load_tmd(args.checkpoint)
        else:
            model = TMDModel.from_teacher(load_teacher(args.checkpoint), head_blocks=args.head_blocks)
        trained = model.tmd_config.schedule
        sched = dataclasses.replace(trained, outer_steps=args.outer_steps or trained.outer_steps,
                                    inner_steps=args.inner_steps or trained.inner_steps)
        _check_vae_space(args, model.transformer)
        x = sample_tmd(model, noise, context, sched)
        nfe = model.effective_nfe(sched.outer_steps, sched.inner_steps)
        what = f"TMD outer {sched.outer_steps} x inner {sched.inner_steps}"
    else:
        teacher = load_teacher(args.checkpoint)
        _check_vae_space(args, teacher)
        g = args.guidance if negative is not None else 1.0
        x = sample_teacher(teacher, noise, context, steps=args.teacher_steps, shift=args.shift,
                           guidance_scale=g, negative_context=None if negative is None else negative.float())
        nfe = args.teacher_steps * (2 if g != 1.0 else 1)
        what = f"teacher {args.teacher_steps} steps, CFG {g:g}"
    seconds = time.perf_counter() - t0
    space = "normalised"
    if args.vae_space:
        x, space = wan21_to_vae_space(x), "wan2.1-vae"
    save_file({"latents": x.contiguous()}, args.out, metadata={"latent_space": space})
    summary = {"what": what, "effective_nfe": round(nfe, 4), "seconds": round(seconds, 3),
               "shape": list(x.shape), "latent_space": space, "out": str(args.out)}
    print(json.dumps(summary) if args.json else
          f"{what}: effective NFE {nfe:.2f}, {seconds:.2f} s, latents {tuple(x.shape)} -> {args.out}")
    return 0


def _check_vae_space(args, transformer) -> None:
    """--vae-space is for Wan2.1 models only: refuse it before sampling."""
    from ..worlds import is_wan21

    if args.vae_space and not is_wan21(transformer):
        cfg = transformer.config
        raise InputError(f"--vae-space de-normalises Wan2.1 latents; this model has {cfg.in_channels} latent channels "
                         f"and {cfg.text_dim}-wide text (toy-world latents decode with tmd_core.toy.decode_latents): "
                         "leave --vae-space out")
