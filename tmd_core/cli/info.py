"""`tmd info PATH`: what a TMD (or Wan teacher) checkpoint holds, read from its header only."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("info", help="print format, sizes, H/L, trained schedule and provenance of a checkpoint")
    p.add_argument("path", help="a .safetensors TMD checkpoint")
    p.add_argument("--json", action="store_true", help="print the full record as JSON")
    p.set_defaults(func=run)


def format_info(info: dict) -> str:
    c = info["tmd_config"]
    tc = info["transformer_config"]
    params = info["parameters"]
    prov = info["provenance"]
    dim = tc.get("num_attention_heads", 0) * tc.get("attention_head_dim", 0)
    lines = [
        f"file        {info['path']} ({info['file_bytes'] / 2**20:.1f} MiB, {', '.join(info['dtypes'])})",
        f"format      {info['format']}",
        f"transformer Wan DiT dim {dim}, {c['num_layers']} layers, text_dim {tc.get('text_dim')}, "
        f"{tc.get('in_channels')} latent channels",
        f"split       backbone {c['num_layers'] - c['head_blocks']} blocks + flow head H = {c['head_blocks']} "
        f"(H/L = {c['head_blocks'] / c['num_layers']:.3f}), fusion {c['fusion']}",
        f"trained for outer_steps {c['outer_steps']} x inner_steps {c['inner_steps']} "
        f"(shifts {c['outer_shift']:g}/{c['inner_shift']:g}, t_max {c['t_max']})",
        "parameters  " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in params.items()),
        "provenance  " + (", ".join(f"{k}={v}" for k, v in prov.items()) or "-"),
    ]
    return "\n".join(lines)


def run(args) -> int:
    from ..checkpoint import read_tmd_info

    info = read_tmd_info(args.path)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
