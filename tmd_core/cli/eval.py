"""`tmd eval`: quality against effective NFE for a teacher and its students, as the paper's Tables 1-2 (docs/eval.md).

Wan2.1 models: the rows' videos are generated with the project's samplers (resumable), decoded by the Wan VAE
(diffusers AutoencoderKLWan, local weights) and scored by VBench in its own environment (--vbench-python).
`--toy`: the toy world, scored by ToyBench. Both write report.json, report.md and quality_vs_nfe.png in --out.
Every input (files, settings, the students' teacher, VBench and its weights) is checked before anything is
generated; `--dry-run` stops there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import InputError

WAN_DEFAULTS = {"teacher": "50x5", "tmd": "1x1,2x1,2x2,4x1", "dmd": "1,2,4", "shift": 8.0, "seeds": 5,
                "shape": (16, 21, 60, 104)}


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="VBench (Wan2.1) or ToyBench (--toy) against effective NFE for a teacher and its students",
        description="Generate every row's videos (teacher steps x CFG; TMD outer x inner; DMD2-v steps) for prompts "
        "x seeds, score them, and write report.json, report.md (rows = method x NFE) and quality_vs_nfe.png in --out. "
        "Re-running generates and scores only what is missing.")
    p.add_argument("--toy", action="store_true", help="the toy world scored by ToyBench (default checkpoints: the "
                   "shipped toy assets, or --run-dir)")
    p.add_argument("--teacher", help="the teacher (any layout tmd reads); Wan: required")
    p.add_argument("--student", action="append", default=[], help="a student (repeatable): a tmd/1 file (rows from "
                   "--tmd-settings) or a plain DMD2-v student (rows from --dmd-steps)")
    p.add_argument("--run-dir", help="--toy: the checkpoints of a `tmd toy train` run folder")
    p.add_argument("--out", default="out/eval", help="folder for videos, scores and the report (default %(default)s)")
    p.add_argument("--prompts", help="a text file, one prompt per line, or 'vbench': VBench's standard prompts for "
                   "the dimensions (Wan); --toy: toy prompts (default: ToyBench's 48)")
    p.add_argument("--embeddings", help="Wan: precomputed text embeddings (.safetensors with 'context' [N, L, 4096], "
                   "optional 'negative_context' and a 'prompts' JSON list in its metadata, as tmd make-data reads)")
    p.add_argument("--text-encoder", help="Wan: local transformers folder of the umt5 encoder, to encode --prompts")
    p.add_argument("--max-prompts", type=int, help="use only the first N prompts")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 per prompt (default: 5 for VBench, as its standard "
                   "suite; 4 for ToyBench)")
    p.add_argument("--quick", action="store_true", help="--toy: one seed per prompt, as `tmd toy bench --quick`")
    p.add_argument("--teacher-settings", help="teacher rows, STEPSxCFG list (CFG 1: no guidance; default: Wan "
                   f"{WAN_DEFAULTS['teacher']}, toy as tmd toy bench)")
    p.add_argument("--tmd-settings", help=f"TMD rows, OUTERxINNER list (default: Wan {WAN_DEFAULTS['tmd']}, toy as "
                   "tmd toy bench)")
    p.add_argument("--dmd-steps", help=f"DMD2-v rows, steps list (default: Wan {WAN_DEFAULTS['dmd']}, toy 1,2,3)")
    p.add_argument("--shift", type=float, help="time shift of the teacher's and DMD2-v's grids (default: 8 for Wan)")
    p.add_argument("--latent-shape", help="Wan: C,F,H,W of a latent (default 16,21,60,104 = 81 frames of 480x832)")
    p.add_argument("--vae", help="Wan: local AutoencoderKLWan folder (diffusers layout, or a pipeline folder with vae/); "
                   "--toy: a toy VAE file (default: the shipped one)")
    p.add_argument("--vbench-python", help="Wan: the python of the VBench environment (scripts/setup_vbench.sh)")
    p.add_argument("--dimensions", default="all", help="Wan: VBench dimensions, comma-separated, or 'all' (default); "
                   "temporal_flickering needs no downloaded weights")
    p.add_argument("--device", default="cpu", help="device of the models and the VAE (default cpu)")
    p.add_argument("--vbench-device", help="device VBench scores on (default: cuda when its environment has it)")
    p.add_argument("--dry-run", action="store_true", help="check every input, print the plan, and exit")
    p.add_argument("--json", action="store_true", help="print the report's rows as JSON")
    p.set_defaults(func=run)


# ---- checks (header-only) -----------------------------------------------------------------------------------

def recorded_teacher(path) -> tuple[str | None, str | None]:
    """(teacher_sha256, teacher name) a student's provenance records, or (None, None)."""
    from ..loading import read_safetensors_header

    try:
        meta = read_safetensors_header(path)[1]
        prov = json.loads(meta.get("provenance", "{}"))
    except (ValueError, OSError):
        return None, None
    return (prov.get("teacher_sha256"), prov.get("teacher")) if isinstance(prov, dict) else (None, None)


def check_students(teacher_path, students, teacher_digest: str) -> list[str]:
    """InputError for a student distilled from another teacher; returns warnings for students that record none."""
    warnings = []
    for s in students:
        digest, name = recorded_teacher(s)
        if digest is None:
            warnings.append(f"{Path(s).name} records no teacher_sha256 in its provenance: cannot check it was "
                            f"distilled from {Path(teacher_path).name}")
        elif digest != teacher_digest:
            raise InputError(f"--student {Path(s).name} was distilled from the teacher {name or '?'} (sha256 "
                             f"{digest[:12]}…), but --teacher {Path(teacher_path).name} has sha256 "
                             f"{teacher_digest[:12]}…: give the teacher it was distilled from")
    return warnings


def _models(args, toy: bool) -> dict:
    from ..loading import describe_checkpoint
    from ..worlds import is_toy_config

    if toy and not args.teacher:
        from ..toy.retrain import run_outputs
        from ..toy.shipped import asset

        if args.student:
            raise InputError("--student needs --teacher (the teacher it was distilled from)")
        if args.run_dir:
            paths = run_outputs(args.run_dir)
        else:
            paths = {n: asset(n) for n in ("toy_vae", "toy_teacher", "toy_tmd", "toy_dmd2v")}
            gone = [str(p) for p in paths.values() if not p.is_file()]
            if gone:
                raise InputError(f"the shipped toy assets are not installed (missing {', '.join(gone)}): run `tmd toy "
                                 "train --install`, or pass --run-dir or --teacher/--student")
        # tmd toy bench's order of rows: teacher, DMD2-v, TMD
        teacher, students, vae = paths["toy_teacher"], [paths["toy_dmd2v"], paths["toy_tmd"]], paths["toy_vae"]
    else:
        if args.run_dir:
            raise InputError("--run-dir names a toy run's checkpoints: use it with --toy and without --teacher")
        if not args.teacher:
            raise InputError("--teacher is required: the Wan teacher the students were distilled from")
        teacher, students, vae = Path(args.teacher), [Path(s) for s in args.student], args.vae
    info = describe_checkpoint(teacher)
    if info["kind"] == "tmd":
        raise InputError(f"--teacher {Path(teacher).name} is a TMD student: give the Wan teacher, and the student "
                         "with --student")
    if is_toy_config(info["transformer_config"]) != toy:
        raise InputError(f"--teacher {Path(teacher).name} is a {'toy-world' if not toy else 'Wan'} model: "
                         + ("add --toy to score it with ToyBench" if not toy else "leave --toy out for VBench"))
    kinds = []
    for s in students:
        si = describe_checkpoint(s)
        if si["transformer_config"].get("text_dim") != info["transformer_config"].get("text_dim") or \
                si["transformer_config"].get("in_channels") != info["transformer_config"].get("in_channels"):
            raise InputError(f"--student {Path(s).name} does not share the teacher's latent and text sizes")
        kinds.append("tmd" if si["kind"] == "tmd" else "plain")
    if len(set(map(str, students))) != len(students):
        raise InputError("the same --student is given twice")
    return {"teacher": Path(teacher), "teacher_info": info, "students": list(map(Path, students)), "kinds": kinds,
            "vae": vae}


def _labels(students) -> list[str]:
    stems = [Path(s).name.removesuffix(".safetensors") for s in students]
    return stems if len(set(stems)) == len(stems) else [str(s) for s in students]


def plan(args) -> dict:
    """Every check of `tmd eval`, before a model is loaded or a video generated."""
    from ..eval import settings
    from ..loading import teacher_sha256
    from ..validation import check_int, check_output_folder

    toy = args.toy
    m = _models(args, toy)
    if args.max_prompts is not None:
        check_int("--max-prompts", args.max_prompts, 1, 100000)
    if args.seeds is not None:
        check_int("--seeds", args.seeds, 1, 1000)
    if args.shift is not None:
        from ..validation import check_float

        check_float("--shift", args.shift, 0.0, 1000.0, lo_open=True)
    if toy:
        from ..eval.toy import DEFAULT_DMD, DEFAULT_TEACHER, DEFAULT_TMD
    else:
        DEFAULT_TEACHER, DEFAULT_TMD, DEFAULT_DMD = WAN_DEFAULTS["teacher"], WAN_DEFAULTS["tmd"], WAN_DEFAULTS["dmd"]
    teacher_settings = settings.parse_teacher(args.teacher_settings or DEFAULT_TEACHER)
    tmd_grid = settings.parse_tmd(args.tmd_settings or DEFAULT_TMD)
    dmd_steps = settings.parse_dmd(args.dmd_steps or DEFAULT_DMD)
    for s, kind in zip(m["students"], m["kinds"]):
        if kind == "tmd":
            from ..checkpoint import read_tmd_info

            read_tmd_info(s)  # its metadata, checked
    out = check_output_folder("--out", args.out)
    digest = teacher_sha256(m["teacher"])
    warnings = check_students(m["teacher"], m["students"], digest)
    p = {"toy": toy, **m, "teacher_sha256": digest, "warnings": warnings, "out": out,
         "labels": _labels(m["students"]), "teacher_settings": teacher_settings, "tmd_grid": tmd_grid,
         "dmd_steps": dmd_steps}
    return _plan_toy(args, p) if toy else _plan_wan(args, p)


def _plan_toy(args, p: dict) -> dict:
    from ..toy.bench import BENCH_SEEDS, benchmark_prompts
    from ..toy.world import as_prompt

    for flag in ("embeddings", "text_encoder", "latent_shape", "vbench_python", "vbench_device"):
        if getattr(args, flag) is not None:
            raise InputError(f"--{flag.replace('_', '-')} does not apply to --toy (ToyBench scores the toy world's "
                             "own clips with its own text encoder)")
    if args.prompts:
        from ..toy.demo import check_toy_prompts
        from ..training.make_data import read_prompts

        texts = read_prompts(args.prompts)
        check_toy_prompts(f"--prompts ({args.prompts})", texts)
        prompts = [as_prompt(t) for t in texts]
    else:
        prompts = benchmark_prompts()
    prompts = prompts[: args.max_prompts] if args.max_prompts else prompts
    if args.quick and args.seeds:
        raise InputError("--quick means one seed per prompt: leave --seeds out")
    seeds = (0,) if args.quick else (tuple(range(args.seeds)) if args.seeds else BENCH_SEEDS)
    if args.vae:
        from ..toy.autoencoder import FORMAT
        from ..validation import check_safetensors_file

        _, meta = check_safetensors_file("--vae", args.vae, "toy VAE")
        if meta.get("format") != FORMAT:
            raise InputError(f"--vae: {Path(args.vae).name} is not a toy VAE (format {meta.get('format')!r})")
        p["vae"] = Path(args.vae)
    if p["vae"] is None:
        from ..toy.shipped import asset

        p["vae"] = asset("toy_vae")
    p.update(scorer="ToyBench", pairs=[(q, s) for q in prompts for s in seeds], dimensions=[])
    return p


def _plan_wan(args, p: dict) -> dict:
    from ..eval import vbench_scores as vb
    from ..eval.wan import vae_folder
    from ..validation import check_latent_shape, parse_shape

    if args.quick:
        raise InputError("--quick applies to --toy; for VBench choose --seeds and --max-prompts")
    dims = vb.parse_dimensions(args.dimensions)
    env = vb.preflight(args.vbench_python, dims)  # the VBench environment and every dimension's weights
    if args.vae is None:
        raise InputError("--vae is required: the local Wan2.1 VAE folder (AutoencoderKLWan, diffusers layout) that "
                         "decodes the videos")
    vae = vae_folder(args.vae)
    cfg = p["teacher_info"]["transformer_config"]
    shape = parse_shape("--latent-shape", args.latent_shape) if args.latent_shape else WAN_DEFAULTS["shape"]
    check_latent_shape("--latent-shape", shape, cfg)
    standard = [d for d in dims if vb.DIMENSIONS[d].standard_prompts]
    seeds = list(range(args.seeds or WAN_DEFAULTS["seeds"]))
    if standard and not (args.prompts == "vbench" or args.embeddings):
        raise InputError(f"VBench scores {', '.join(standard)} only on its own prompts: pass --prompts vbench, or "
                         "leave those dimensions out")
    if standard and len(seeds) > 5:
        raise InputError(f"VBench's standard mode reads at most 5 videos per prompt: --seeds {len(seeds)} > 5")
    texts, contexts, negative = _text(args, cfg["text_dim"], dims)
    if args.max_prompts:
        texts, contexts = texts[: args.max_prompts], contexts[: args.max_prompts]
    if standard and args.embeddings:
        known = set(vb.standard_prompts(args.vbench_python, dims))
        foreign = [t for t in texts if t not in known]
        if foreign:
            raise InputError(f"VBench scores {', '.join(standard)} only on its own prompts, and --embeddings holds "
                             f"{len(foreign)} others (e.g. {foreign[0]!r}): embed VBench's prompts, or leave those "
                             "dimensions out")
    if any(s.cfg != 1.0 for s in p["teacher_settings"]) and negative is None:
        raise InputError("the teacher's CFG rows need a negative prompt: add 'negative_context' to --embeddings, use "
                         "--text-encoder, or give teacher settings with CFG 1 (e.g. --teacher-settings 50x1)")
    shift = args.shift if args.shift is not None else WAN_DEFAULTS["shift"]
    p.update(scorer="VBench", dimensions=dims, vbench=env, vae=vae, shape=tuple(shape), seeds=seeds, prompts=texts,
             contexts=contexts, negative=negative, standard=bool(standard), shift=shift)
    return p


def _text(args, text_dim: int, dims) -> tuple[list[str], list, object]:
    """(prompt texts, one context Tensor[L, D] each, negative Tensor[L, D] or None)."""
    from ..errors import ConfigError, TMDError

    if args.embeddings and args.text_encoder:
        raise InputError("give --embeddings or --text-encoder, not both")
    if args.embeddings:
        if args.prompts:
            raise InputError("--embeddings carries its prompts in its metadata: leave --prompts out")
        try:
            from .make_data import _load_embeddings

            contexts, negative, prompts, _ = _load_embeddings(args.embeddings)
        except ConfigError as e:
            raise InputError(str(e)) from e
        if prompts is None:
            raise InputError(f"--embeddings: {Path(args.embeddings).name} has no 'prompts' metadata (a JSON list, one "
                             "text per embedding): VBench needs each video's prompt")
        negative = negative[0] if negative is not None and negative.ndim == 3 else negative
    elif args.text_encoder:
        from ..training.make_data import WAN_NEGATIVE_PROMPT, TextEncoder, read_prompts

        if not args.prompts:
            raise InputError("--text-encoder needs --prompts (a text file, or 'vbench')")
        if args.prompts == "vbench":
            from ..eval.vbench_scores import standard_prompts

            prompts = standard_prompts(args.vbench_python, dims)
        else:
            prompts = read_prompts(args.prompts)
        if args.max_prompts:
            prompts = prompts[: args.max_prompts]
        try:
            encoder = TextEncoder(args.text_encoder, device=args.device)
        except TMDError:
            raise  # already says what is wrong
        except (OSError, ValueError) as e:
            raise InputError(f"--text-encoder: cannot load {args.text_encoder} ({e})") from e
        contexts = encoder.encode(prompts)
        negative = encoder.encode([WAN_NEGATIVE_PROMPT])[0]
    else:
        raise InputError("Wan models read umt5 text embeddings: give --embeddings (e.g. precomputed once) or "
                         "--text-encoder with --prompts")
    widths = {int(c.shape[-1]) for c in contexts}
    if widths != {text_dim}:
        raise InputError(f"the prompt embeddings are {sorted(widths)} wide, the teacher reads {text_dim}-wide text")
    return list(prompts), list(contexts), negative


# ---- run ------------------------------------------------------------------------------------------------------

def _describe(p: dict) -> str:
    rows = len(p["teacher_settings"]) + sum(len(p["tmd_grid"]) if k == "tmd" else len(p["dmd_steps"])
                                            for k in p["kinds"])
    if p["toy"]:
        what = f"{len(p['pairs'])} (prompt, seed) pairs, scored by ToyBench"
    else:
        what = (f"{len(p['prompts'])} prompts x {len(p['seeds'])} seeds = {rows * len(p['prompts']) * len(p['seeds'])} "
                f"videos of latent {'x'.join(map(str, p['shape']))}, VBench dimensions {', '.join(p['dimensions'])}")
    return f"plan: teacher {p['teacher'].name} + {len(p['students'])} student(s), {rows} rows; {what} -> {p['out']}"


def _check_out(p: dict) -> None:
    """An --out folder holds one evaluation: refuse to mix videos of other checkpoints into it."""
    from ..checkpoint import atomic_write_text

    record = {"teacher_sha256": p["teacher_sha256"],
              "students": {str(s.resolve()): [s.stat().st_size, s.stat().st_mtime_ns] for s in p["students"]},
              "world": "toy" if p["toy"] else "wan", **({} if p["toy"] else {"latent_shape": list(p["shape"])})}
    path = p["out"] / "eval_plan.json"
    if path.is_file():
        old = json.loads(path.read_text())
        for key in ("teacher_sha256", "world", "latent_shape"):
            if old.get(key) != record.get(key):
                raise InputError(f"--out {p['out']} holds an evaluation with another {key.replace('_', ' ')} "
                                 f"({old.get(key)} vs {record.get(key)}): choose another --out")
        for s, stamp in record["students"].items():
            if s in old.get("students", {}) and old["students"][s] != stamp:
                raise InputError(f"--student {Path(s).name} changed since --out {p['out']} was written (size or "
                                 "time): choose another --out, or delete its videos")
        record["students"] = {**old.get("students", {}), **record["students"]}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def run(args) -> int:
    p = plan(args)
    for w in p["warnings"]:
        print(f"warning: {w}")
    if args.dry_run:
        print(_describe(p))
        print("# inputs ok")
        return 0
    p["out"].mkdir(parents=True, exist_ok=True)
    from ..checkpoint import remove_stale_temporaries

    for folder in (p["out"], p["out"] / "scores", p["out"] / "rows"):  # what a stopped run left half-written
        remove_stale_temporaries(folder)
    _check_out(p)
    t0 = time.perf_counter()
    rows, counts = (_run_toy if p["toy"] else _run_wan)(args, p)
    from ..eval.report import columns_for, format_table, write_report

    columns = columns_for(p["scorer"], p["dimensions"])
    meta = {"scorer": p["scorer"], "teacher": p["teacher"].name, "teacher_sha256": p["teacher_sha256"],
            "students": [s.name for s in p["students"]], **counts}
    if p["scorer"] == "VBench":
        meta.update(dimensions=p["dimensions"], prompts=p["prompts"], seeds=p["seeds"], vbench=p["vbench"],
                    scaled_scores="VBench's normalisation and weights over the dimensions run only "
                                  "(a full VBench total needs all 16)")
    else:
        meta.update(pairs=len(p["pairs"]), seeds=sorted({s for _, s in p["pairs"]}))
    paths = write_report(p["out"], rows, p["scorer"], columns, meta)
    print(json.dumps(rows, default=str) if args.json else format_table(rows, columns))
    print(f"{counts['generated']} generated, {counts['skipped']} already there; {time.perf_counter() - t0:.1f} s; "
          f"wrote {paths['json']}, {paths['markdown']}, {paths['plot']}")
    return 0


def _run_toy(args, p: dict) -> tuple[list[dict], dict]:
    import torch

    from ..checkpoint import load_tmd
    from ..eval.toy import methods, reference_rows, score_rows
    from ..loading import load_teacher
    from ..toy.autoencoder import load_vae

    vae = load_vae(p["vae"])
    teacher = load_teacher(p["teacher"], dtype=torch.float32)
    students = [(label, kind, load_tmd(s, dtype=torch.float32) if kind == "tmd" else
                 load_teacher(s, dtype=torch.float32)) for label, kind, s in zip(p["labels"], p["kinds"], p["students"])]
    ms = methods(teacher, students, p["teacher_settings"], p["tmd_grid"], p["dmd_steps"])
    digests = {"teacher": p["teacher_sha256"], "vae": str(p["vae"]),
               **{str(s): list(_stamp(s)) for s in p["students"]}}
    rows, scored = score_rows(ms, p["pairs"], vae, p["out"], digests)
    return reference_rows(vae, p["pairs"]) + rows, {"generated": scored, "skipped": len(ms) - scored}


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _run_wan(args, p: dict) -> tuple[list[dict], dict]:
    from ..checkpoint import atomic_write_text, load_tmd
    from ..eval import vbench_scores as vb
    from ..eval.wan import dmd_rows, generate_videos, load_vae, teacher_rows, tmd_rows
    from ..loading import load_teacher

    device = args.device
    teacher = load_teacher(p["teacher"], device=device)
    rows = teacher_rows(teacher, p["teacher_settings"], p["shift"])
    for label, kind, s in zip(p["labels"], p["kinds"], p["students"]):
        many = p["kinds"].count(kind) > 1  # labels prefix the rows of two students of a kind
        if kind == "tmd":
            rows += tmd_rows(load_tmd(s, device=device), p["tmd_grid"], label if many else None)
        else:
            rows += dmd_rows(load_teacher(s, device=device), p["dmd_steps"], p["shift"], label if many else None)
    vae = load_vae(p["vae"], device=device)
    videos = p["out"] / "videos"
    gen = generate_videos(rows, p["prompts"], p["contexts"], p["negative"], p["seeds"], p["shape"], vae, videos)
    # VBench: a row is scored again only if its videos or the dimensions changed (scores/<row>.json)
    cache_dir = p["out"] / "scores"
    todo, cached = {}, {}
    for row in rows:
        files = gen["files"][row.folder]
        key = {"dimensions": p["dimensions"], "videos": sorted(files), "mode": p["standard"]}
        path = cache_dir / f"{row.folder}.json"
        if path.is_file() and json.loads(path.read_text()).get("key") == key:
            cached[row.folder] = json.loads(path.read_text())["scores"]
        else:
            todo[row.folder] = ({"path": str(videos / row.folder), "prompts": files}, key)
    if todo:
        print(f"VBench: scoring {len(todo)} row(s) on {', '.join(p['dimensions'])}", flush=True)
        scores = vb.run_vbench(args.vbench_python, {k: v[0] for k, v in todo.items()}, p["dimensions"],
                               p["out"] / "vbench_work", device=args.vbench_device, standard=p["standard"])
        for folder, (_, key) in todo.items():
            atomic_write_text(cache_dir / f"{folder}.json", json.dumps({"key": key, "scores": scores[folder]}, indent=1))
            cached[folder] = scores[folder]
    out = []
    for row in rows:
        dims = {d: cached[row.folder][d]["score"] for d in p["dimensions"]}
        out.append({"name": row.name, "method": row.family, "nfe": round(row.nfe, 3), "scorer": "VBench",
                    **vb.scaled_scores(dims), **dims, "videos": len(gen["files"][row.folder]),
                    **({"seconds_per_video": round(gen["seconds"][row.name], 3)} if row.name in gen["seconds"] else {})})
    return out, {"generated": gen["generated"], "skipped": gen["skipped"]}
