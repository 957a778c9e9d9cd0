"""`tmd info PATH`: what a checkpoint holds (TMD student, Wan teacher or DMD2-v student), read from its header only."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("info", help="print format, sizes, H/L, trained schedule and provenance of a checkpoint")
    p.add_argument("path", help="a checkpoint: a tmd/1 student or patch, a Wan teacher (any layout) or a DMD2-v student")
    p.add_argument("--json", action="store_true", help="print the full record as JSON")
    p.set_defaults(func=run)


def _transformer_line(tc: dict, layers: int) -> str:
    dim = tc.get("num_attention_heads", 0) * tc.get("attention_head_dim", 0)
    return (f"transformer Wan DiT dim {dim}, {layers} layers, text_dim {tc.get('text_dim')}, "
            f"{tc.get('in_channels')} latent channels")


def format_info(info: dict) -> str:
    """The text `tmd info` prints for a `describe_checkpoint` / `read_tmd_info` record."""
    tc = info["transformer_config"]
    params = info["parameters"]
    prov = info["provenance"]
    lines = [f"file        {info['path']} ({info['file_bytes'] / 2**20:.1f} MiB, {', '.join(info['dtypes'])})",
             f"format      {info['format']}"]
    if info.get("kind") == "tmd-patch":  # docs/patches.md
        c, lora = info["tmd_config"], info["lora"]
        stored = [e for e in lora.get("errors", []) if e.get("rank") == "stored"]
        lines += [
            f"kind        a TMD patch: LoRA rank {lora.get('rank')} ({lora.get('dtype')}) + fusion layer and gap "
            f"embedding; it needs its teacher (tmd generate PATCH --teacher T)",
            "base        " + _transformer_line(tc, c["num_layers"]).removeprefix("transformer "),
            f"split       backbone {c['num_layers'] - c['head_blocks']} blocks + flow head H = {c['head_blocks']}, "
            f"fusion {c['fusion']}; trained for {c['outer_steps']} x {c['inner_steps']}",
        ]
        if stored:
            lines.append(f"error       relative {stored[0]['relative']:.3e} of the student's changes (‖ΔW - BA‖/‖ΔW‖)")
        prov = {k: v for k, v in prov.items() if k != "student_provenance"}
    elif info.get("kind", "tmd") == "tmd":
        c = info["tmd_config"]
        lines += [
            _transformer_line(tc, c["num_layers"]),
            f"split       backbone {c['num_layers'] - c['head_blocks']} blocks + flow head H = {c['head_blocks']} "
            f"(H/L = {c['head_blocks'] / c['num_layers']:.3f}), fusion {c['fusion']}",
            f"trained for outer_steps {c['outer_steps']} x inner_steps {c['inner_steps']} "
            f"(shifts {c['outer_shift']:g}/{c['inner_shift']:g}, t_max {c['t_max']})",
            f"inner flow  u = {c['inner_velocity']}" + ("" if c["inner_velocity"] == "(y_s-head)/s" else
                                                       " (old reading: load_tmd refuses it; distill the student again)"),
        ]
    else:
        what = ("a DMD2-v student (plain Wan transformer, few-step sampling, Eq. 18)" if info["format"] == "wan-dmd"
                else f"a Wan teacher ({info['kind']} layout): load it as a teacher, or split it with --head-blocks")
        lines += [f"kind        {what}", _transformer_line(tc, info["num_layers"])]
    lines += ["parameters  " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in params.items()),
              "provenance  " + (", ".join(f"{k}={v}" for k, v in prov.items()) or "-")]
    return "\n".join(lines)


def run(args) -> int:
    from ..loading import describe_checkpoint

    info = describe_checkpoint(args.path)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
