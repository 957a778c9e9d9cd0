"""Peak RSS of sampling a Wan2.1 1.3B on the native path (MODEL + TMD patch, MODEL + full student) vs TMDModelLoader
(the diffusers path), in ComfyUI's own process on the CPU (issue 11; docs/host.md §12).

The exact 1.3B architecture with random weights (`--blocks` fewer for a quick check), synthesised once into a cache
folder by the repo's own code:

- the teacher: random bf16 weights of the shipped 1.3B config, ComfyUI layout (`model.diffusion_model.` keys, as
  `benchmarks/bench_real_scale.py` writes it), in `<cache>/diffusion_models/`;
- a stand-in TMD student (`tmd/1`, bf16, H = `--head-blocks`): the teacher with every transformer tensor moved by
  seeded Gaussian noise of `--student-noise` (5 %) of its RMS, fusion layer and gap embedding moved off their
  initialisation (`save_tmd`), in `<cache>/tmd/`;
- its TMD patch of rank `--rank` (64), made by `python -m tmd_core extract-lora STUDENT --teacher T --rank R`
  (factors in the student's dtype, bf16), in `<cache>/tmd/`.

Each case then runs in a fresh ComfyUI process (`--cpu`; the venv of `$COMFYUI_PATH`, as the real-host tests run
it), with the node classes' own `execute` under `torch.inference_mode()` as the executor calls them, one after
another:

  a   UNETLoader (weight_dtype default) -> TMDApplyToModel(patch) -> TMDSampler
  b   UNETLoader -> TMDApplyToModel(full student) -> TMDSampler
  c   TMDModelLoader(full student, dtype default) -> TMDSampler (the library's diffusers model)
  d   UNETLoader -> KSampler, one euler step at CFG 5 (the teacher alone: what TMD adds is a/b minus this)

TMDSampler runs `--outer` x `--inner` steps on a `[1, 16, frames, size, size]` latent with a synthetic prompt
embedding (`[1, text_len, 4096]`, the first 16 tokens random, the rest zero as umt5's padding). Cases a, b, d run
twice: with ComfyUI's default CPU weight dtype (it keeps a bf16 file's weights in fp32 on a `--cpu` host) and with
`--bf16-unet` (bf16 weights, as on a GPU; compute still fp32 through ComfyUI's manual cast), suffix `-bf16`.
Measured per case: peak RSS (`/proc/self/status` VmHWM, = getrusage maxrss), RSS after the imports (the baseline)
and after each node, wall time per node, the bytes of the MODEL's weights, of its weight patches and of the
unpatched weights ComfyUI keeps as backups while patched weights are loaded. The latents of a and b (and c) are
compared (finite, relative L2): the stand-in student is random noise, so that figure says nothing about a trained
student's patch.

    COMFYUI_PATH=/path/to/ComfyUI .venv/bin/python benchmarks/bench_native_sampling_memory.py
        [--blocks 30] [--cases a,b,c,d,a-bf16,b-bf16,d-bf16] [--cache DIR] [--out JSON] [--threads 1]
        [--frames 2 --size 16 --text-len 512] [--outer 2 --inner 2] [--rank 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.child_result import child_result  # noqa: E402

CONFIG_NAME = "wan21_t2v_1.3b"
GiB = 2**30
CASES = {
    "a": "UNETLoader + TMDApplyToModel(patch) -> TMDSampler",
    "b": "UNETLoader + TMDApplyToModel(full student) -> TMDSampler",
    "c": "TMDModelLoader(full student) -> TMDSampler",
    "d": "UNETLoader -> KSampler (1 teacher step, CFG 5)",
}
DEFAULT_CASES = "a,b,c,d,a-bf16,b-bf16,d-bf16"


# --- pure helpers (unit-tested) -------------------------------------------------------------------

def parse_cases(text: str) -> list[tuple[str, str]]:
    """"a,b,c-bf16" -> [("a", "default"), ("b", "default"), ...]; the weight dtype is ComfyUI's `--cpu` default or
    `--bf16-unet` (suffix -bf16). Case c (TMDModelLoader) does not use the MODEL, so it takes no suffix."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        case, _, dtype = item.partition("-")
        if case not in CASES or dtype not in ("", "bf16") or (case == "c" and dtype):
            raise SystemExit(f"--cases: unknown case {item!r}: use a, b, c, d, a-bf16, b-bf16, d-bf16")
        out.append((case, dtype or "default"))
    if not out:
        raise SystemExit("--cases: no case given")
    return out


def case_id(case: str, unet_dtype: str) -> str:
    return case if unet_dtype == "default" else f"{case}-{unet_dtype}"


def default_head_blocks(layers: int) -> int:
    """H = 5 (the paper's and the presets') when the model has more than 5 blocks, else half of them (>= 1)."""
    return 5 if layers > 5 else max(1, layers // 2)


def proc_status(text: str) -> dict[str, int]:
    """Bytes of the VmRSS / VmHWM / RssAnon / RssFile lines of a /proc/<pid>/status text."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024  # kB
    return out


def rel_l2(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def format_table(result: dict) -> str:
    """The markdown table of the cases: peak RSS, minus the import baseline, ratios to the teacher step d (same
    weight dtype) and to the diffusers path c."""
    cases = result["cases"]
    c = cases.get("c")
    rows = ["| case | what | MODEL weights | peak RSS | peak − imports | ÷ d (same weights) | ÷ c | wall |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    for cid, r in cases.items():
        d = cases.get(case_id("d", r["unet_dtype"]))
        weights = f"{r.get('model_weight_dtype', '?')} (file bf16)" if r["case"] != "c" else \
            f"{r.get('model_weight_dtype', '?')} (diffusers)"
        over_d = f"{r['peak_rss'] / d['peak_rss']:.2f}×" if d and r["case"] != "c" else "–"
        over_c = f"{r['peak_rss'] / c['peak_rss']:.2f}×" if c else "–"
        rows.append(f"| {cid} | {CASES[r['case']]} | {weights} | {r['peak_rss'] / GiB:.2f} GiB | "
                    f"{(r['peak_rss'] - r['rss_imports']) / GiB:.2f} GiB | {over_d} | {over_c} | {r['wall_s']:.0f} s |")
    return "\n".join(rows)


# --- synthesis (the repo's Python; run once, cached) ------------------------------------------------

def _rms_scale(p, rel: float) -> float:
    return rel * float(p.float().pow(2).mean().sqrt()) + 1e-3


def write_teacher(path: Path, layers: int, seed: int = 0) -> dict:
    """Random bf16 weights of the shipped 1.3B config with `layers` blocks, ComfyUI layout, streamed to disk."""
    import torch
    from diffusers import WanTransformer3DModel

    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_real_scale import _save_streaming, random_wan_weights
    from tmd_core.layouts import shipped_config

    t0 = time.perf_counter()
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in
                  WanTransformer3DModel(**dict(shipped_config(CONFIG_NAME), num_layers=layers)).state_dict().items()}
    tensors = random_wan_weights(shapes, seed)  # as bench_real_scale.write_checkpoint
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    _save_streaming(tensors, tmp, {"format": "pt"})
    tmp.rename(path)
    return {"parameters": sum(v.numel() for v in tensors.values()), "file_bytes": path.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 1)}


def write_student(teacher_path: Path, path: Path, head_blocks: int, noise: float, seed: int = 1) -> dict:
    """A stand-in for a trained 1.3B TMD student: the teacher (bf16) with every transformer tensor moved by seeded
    noise of `noise` x its RMS (+1e-3), the fusion layer and gap embedding too (fusion gate α + 0.3)."""
    import torch

    sys.path.insert(0, str(ROOT))
    import tmd_core
    from tmd_core.loading import load_teacher

    t0 = time.perf_counter()
    teacher = load_teacher(teacher_path)  # bf16 views of the file
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the fusion layer's initialisation
        student = tmd_core.TMDModel.from_teacher(teacher, head_blocks=head_blocks)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in student.named_parameters():
            scale = 0.3 if name == "fusion.alpha" else _rms_scale(p, noise)
            p.data = (p.float() + scale * torch.randn(p.shape, generator=g)).to(p.dtype)  # new tensor, file untouched
    student.tmd_config.extra["trained"] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmd_core.save_tmd(student, path, provenance={"teacher": teacher_path.name, "stand_in": f"teacher + {noise} x RMS "
                                                 f"Gaussian noise on every tensor, seed {seed}"})
    return {"parameters": sum(p.numel() for p in student.parameters()), "file_bytes": path.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 1)}


def synthesise(cache: Path, layers: int, head_blocks: int, rank: int, noise: float, threads: int) -> dict:
    """The three files in `cache` (reused when `cache/synth.json` records the same settings)."""
    settings = {"layers": layers, "head_blocks": head_blocks, "rank": rank, "student_noise": noise, "version": 1}
    record = cache / "synth.json"
    names = {"teacher": f"wan2.1_t2v_1.3B_random_L{layers}_bf16.safetensors",
             "student": f"tmd_1p3b_random_L{layers}_H{head_blocks}.safetensors",
             "patch": f"tmd_1p3b_random_L{layers}_H{head_blocks}.lora{rank}.safetensors"}
    paths = {"teacher": cache / "diffusion_models" / names["teacher"], "student": cache / "tmd" / names["student"],
             "patch": cache / "tmd" / names["patch"]}
    if record.exists():
        done = json.loads(record.read_text())
        if done.get("settings") == settings and all(p.exists() for p in paths.values()):
            print(f"synthesised files reused from {cache}", flush=True)
            return done
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="")
    out = {"settings": settings, "names": names}
    here = f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; " \
           f"from benchmarks.bench_native_sampling_memory import write_teacher, write_student; "
    for what, call in (("teacher", f"write_teacher(Path({str(paths['teacher'])!r}), {layers})"),
                       ("student", f"write_student(Path({str(paths['teacher'])!r}), Path({str(paths['student'])!r}), "
                                   f"{head_blocks}, {noise})")):
        if paths[what].exists() and what == "teacher" and (cache / "teacher.json").exists():
            out[what] = json.loads((cache / "teacher.json").read_text())
            continue
        print(f"writing the {what} ...", flush=True)
        out[what] = child_result([sys.executable, "-c", here + f"print('JSON=' + json.dumps({call}))"], env, "JSON=",
                                 f"writing the {what}")
        if what == "teacher":
            (cache / "teacher.json").write_text(json.dumps(out[what]))
        print(f"  {out[what]}", flush=True)
    print(f"extracting the rank-{rank} patch (tmd extract-lora) ...", flush=True)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "tmd_core", "extract-lora", str(paths["student"]), "--teacher", str(paths["teacher"]),
           "--rank", str(rank), "--out", str(paths["patch"]), "--force", "--json"]
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"tmd extract-lora failed:\n{p.stderr[-3000:]}")
    text = p.stdout[p.stdout.index("{"):]
    out["patch"] = {**json.loads(text), "wall_s": round(time.perf_counter() - t0, 1),
                    "command": "python -m tmd_core " + " ".join(cmd[3:]).replace(str(cache), "<cache>")}
    out["patch"]["out"] = str(out["patch"]["out"]).replace(str(cache), "<cache>")  # no path of this machine
    print(f"  {out['patch']['seconds']} s, {out['patch']['file_bytes'] / 2**20:.0f} MiB", flush=True)
    record.write_text(json.dumps(out, indent=1))
    return out


# --- one case (ComfyUI's venv, cwd = the ComfyUI checkout) --------------------------------------------

def _status() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return proc_status(f.read())


def _tensor_bytes(obj, seen: set) -> int:
    """Bytes of the distinct tensors inside a ComfyUI patch (tuples, lists, weight adapters' `.weights`)."""
    import torch

    if torch.is_tensor(obj):
        key = (obj.untyped_storage().data_ptr(), obj.storage_offset(), obj.numel())
        if key in seen:
            return 0
        seen.add(key)
        return obj.nbytes
    if isinstance(obj, (tuple, list)):
        return sum(_tensor_bytes(x, seen) for x in obj)
    if hasattr(obj, "weights"):  # comfy.weight_adapter.*Adapter
        return _tensor_bytes(obj.weights, seen)
    return 0


def run_case(a) -> dict:
    comfy_path = os.environ["COMFYUI_PATH"]
    t_start = time.perf_counter()
    status_start = _status()
    sys.argv = sys.argv[:1]
    sys.path.insert(0, comfy_path)
    os.chdir(comfy_path)
    from comfy.options import enable_args_parsing

    enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = True
    args.bf16_unet = a.unet_dtype == "bf16"
    import utils.extra_config  # noqa: F401,I001  (as main.py does first)
    import importlib.util

    import comfy.model_management
    import comfy.sd  # noqa: F401
    import folder_paths
    import nodes as comfy_nodes  # ComfyUI's nodes.py: UNETLoader, common_ksampler
    import torch

    spec = importlib.util.spec_from_file_location("comfyui_tmd", f"{ROOT}/__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_tmd"] = pack
    spec.loader.exec_module(pack)  # as ComfyUI imports a pack folder
    from comfyui_tmd.nodes.loader import TMDModelLoader
    from comfyui_tmd.nodes.native import TMDApplyToModel
    from comfyui_tmd.nodes.sampler import TMDSampler
    from comfyui_tmd.nodes.schedule import TMDSchedule
    from safetensors.torch import save_file

    torch.set_num_threads(a.threads)
    cache = Path(a.cache)
    folder_paths.add_model_folder_path("diffusion_models", str(cache / "diffusion_models"), is_default=True)
    folder_paths.add_model_folder_path("tmd", str(cache / "tmd"), is_default=True)
    names = json.loads((cache / "synth.json").read_text())["names"]

    g = torch.Generator().manual_seed(0)
    def conditioning():  # noqa: E306
        ctx = torch.zeros(1, a.text_len, 4096)
        ctx[:, :16] = torch.randn(1, min(16, a.text_len), 4096, generator=g)
        return [[ctx, {"pooled_output": None}]]
    positive, negative = conditioning(), conditioning()
    latent = {"samples": torch.zeros(1, 16, a.frames, a.size, a.size)}

    stages, out = [], {"case": a.case, "unet_dtype": a.unet_dtype, "threads": torch.get_num_threads(),
                       "rss_start": status_start["VmRSS"]}
    imports = _status()
    out["rss_imports"] = imports["VmRSS"]
    out["rss_file_imports"] = imports.get("RssFile")
    out["import_s"] = round(time.perf_counter() - t_start, 2)

    def stage(name, t0):
        s = _status()
        stages.append({"stage": name, "seconds": round(time.perf_counter() - t0, 2), "rss": s["VmRSS"],
                       "rss_anon": s.get("RssAnon"), "rss_file": s.get("RssFile"), "peak_so_far": s["VmHWM"]})
        print(f"  {name}: {stages[-1]['seconds']} s, RSS {s['VmRSS'] / GiB:.2f} GiB, peak {s['VmHWM'] / GiB:.2f} GiB",
              file=sys.stderr, flush=True)

    with torch.inference_mode():  # as the executor runs every node
        if a.case in ("a", "b", "d"):
            t0 = time.perf_counter()
            model = comfy_nodes.UNETLoader().load_unet(names["teacher"], "default")[0]
            stage("UNETLoader", t0)
            weights = model.model_state_dict("diffusion_model.")
            out["model_weight_bytes"] = sum(t.nbytes for t in weights.values())
            out["model_weight_dtype"] = str(model.model.get_dtype()).replace("torch.", "")
            out["manual_cast_dtype"] = str(getattr(model.model, "manual_cast_dtype", None)).replace("torch.", "")
            del weights
        if a.case in ("a", "b"):
            t0 = time.perf_counter()
            node_out = TMDApplyToModel.execute(model=model, tmd_name=names["patch" if a.case == "a" else "student"])
            tmd_model = node_out.args[0]
            stage("TMDApplyToModel", t0)
            seen: set = set()
            out["weight_patches"] = len(tmd_model.patches)
            out["weight_patch_bytes"] = sum(_tensor_bytes(p, seen) for v in tmd_model.patches.values() for p in v)
            out["tmd_info"] = node_out.ui["tmd_info"][0]
        if a.case == "c":
            t0 = time.perf_counter()
            tmd_model = TMDModelLoader.execute(ckpt_name=names["student"], head_blocks=a.head_blocks,
                                               dtype="default").args[0]
            stage("TMDModelLoader", t0)
            out["model_weight_bytes"] = sum(t.nbytes for t in tmd_model.model.state_dict().values())
            out["model_weight_dtype"] = str(next(tmd_model.model.parameters()).dtype).replace("torch.", "")
        t0 = time.perf_counter()
        if a.case == "d":
            x = comfy_nodes.common_ksampler(model, 0, 1, 5.0, "euler", "simple", positive, negative, latent)[0]
            stage("KSampler", t0)
        else:
            schedule = TMDSchedule.execute(outer_steps=a.outer, inner_steps=a.inner, outer_shift=10.0,
                                           inner_shift=10.0).args[0]
            x = TMDSampler.execute(model=tmd_model, positive=positive, latent=latent, schedule=schedule,
                                   seed=0).args[0]
            stage("TMDSampler", t0)
            if a.case in ("a", "b"):
                out["backup_bytes"] = sum(b.weight.nbytes for b in tmd_model.backup.values())
                out["backup_weights"] = len(tmd_model.backup)
        samples = x["samples"].float().contiguous()
    out["latent_finite"] = bool(torch.isfinite(samples).all())
    out["latent_shape"] = list(samples.shape)
    save_file({"samples": samples}, a.latent_out)
    end = _status()
    out["peak_rss"] = end["VmHWM"]
    out["stages"] = stages
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    out["loaded_models"] = len(comfy.model_management.current_loaded_models)
    return out


# --- driver -----------------------------------------------------------------------------------------

def comfy_python(comfy_path: str) -> str:
    py = Path(comfy_path) / ".venv" / "bin" / "python"
    return str(py if py.exists() else sys.executable)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=30, help="transformer blocks (30 = the real 1.3B; 2 for a quick check)")
    ap.add_argument("--head-blocks", type=int, default=None, help="H (default 5, or half of --blocks when fewer than 6)")
    ap.add_argument("--rank", type=int, default=64, help="rank of the TMD patch")
    ap.add_argument("--student-noise", type=float, default=0.05, help="the stand-in student's change, x RMS per tensor")
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--frames", type=int, default=2, help="latent frames (2 = 5 video frames)")
    ap.add_argument("--size", type=int, default=16, help="latent height = width (16 = 128 px)")
    ap.add_argument("--text-len", type=int, default=512, help="prompt tokens (umt5 pads to 512)")
    ap.add_argument("--outer", type=int, default=2)
    ap.add_argument("--inner", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder of the synthesised files (default ~/.cache/comfyui-tmd/native_sampling_L<blocks>)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON result (default benchmarks/results/native_sampling_memory_1p3b.json for 30 blocks)")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case in ComfyUI's process
    ap.add_argument("--unet-dtype", default="default", help=argparse.SUPPRESS)
    ap.add_argument("--latent-out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.head_blocks = a.head_blocks or default_head_blocks(a.blocks)
    if a.case:
        print("JSON=" + json.dumps(run_case(a)), flush=True)
        return 0

    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        raise SystemExit("set COMFYUI_PATH to a ComfyUI checkout with its venv (scripts/setup_comfyui.sh)")
    todo = parse_cases(a.cases)
    cache = a.cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "comfyui-tmd" / \
        f"native_sampling_L{a.blocks}"
    out_path = a.out or (ROOT / "benchmarks" / "results" / "native_sampling_memory_1p3b.json" if a.blocks == 30
                         else cache / "result.json")
    t_all = time.perf_counter()
    synth = synthesise(cache, a.blocks, a.head_blocks, a.rank, a.student_noise, a.threads)
    files = {k: (cache / ("diffusion_models" if k == "teacher" else "tmd") / n).stat().st_size
             for k, n in synth["names"].items()}
    py = comfy_python(comfy_path)
    cases, latents = {}, {}
    for case, dtype in todo:
        cid = case_id(case, dtype)
        latent_out = cache / f"latent_{cid}.safetensors"
        cmd = [py, __file__, "--case", case, "--unet-dtype", dtype, "--blocks", str(a.blocks),
               "--head-blocks", str(a.head_blocks), "--frames", str(a.frames), "--size", str(a.size),
               "--text-len", str(a.text_len), "--outer", str(a.outer), "--inner", str(a.inner),
               "--threads", str(a.threads), "--cache", str(cache), "--latent-out", str(latent_out)]
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), CUDA_VISIBLE_DEVICES="", COMFYUI_PATH=comfy_path)
        print(f"case {cid}: {CASES[case]} (weights: {dtype}) ...", flush=True)
        t0 = time.perf_counter()
        r = child_result(cmd, env, "JSON=", f"case {cid}")
        r["process_wall_s"] = round(time.perf_counter() - t0, 1)
        cases[cid] = r
        latents[cid] = latent_out
        print(f"  peak RSS {r['peak_rss'] / GiB:.2f} GiB (imports {r['rss_imports'] / GiB:.2f} GiB), "
              f"{r['process_wall_s']:.0f} s", flush=True)

    from safetensors.torch import load_file

    lat = {k: load_file(str(v))["samples"] for k, v in latents.items()}
    comparison = {}
    for x, y in (("a", "b"), ("c", "b"), ("a-bf16", "b-bf16"), ("b-bf16", "b"), ("c", "b-bf16")):
        if x in lat and y in lat:
            comparison[f"{x}_vs_{y}"] = {"rel_l2": rel_l2(lat[x], lat[y]),
                                         "max_abs": float((lat[x] - lat[y]).abs().max())}
    import torch

    result = {
        "benchmark": "native_sampling_memory",
        "measured": time.strftime("%Y-%m-%d"),
        "config": f"{CONFIG_NAME}, {a.blocks} blocks, random weights",
        "python_comfyui": "$COMFYUI_PATH/.venv/bin/python", "python": platform.python_version(),
        "torch_driver": torch.__version__,
        "settings": {"latent": [1, 16, a.frames, a.size, a.size], "text_len": a.text_len,
                     "tmd_schedule": f"{a.outer}x{a.inner}", "head_blocks": a.head_blocks, "rank": a.rank,
                     "student_noise": a.student_noise, "threads": a.threads,
                     "teacher_step": "KSampler euler/simple, 1 step, CFG 5 (cond + uncond batched)"},
        "files": {k: {"name": synth["names"][k], "bytes": v} for k, v in files.items()},
        "synthesis": synth,
        "cases": cases,
        "comparison": comparison,
        "latents_finite": {k: bool(torch.isfinite(v).all()) for k, v in lat.items()},
        "total_wall_s": round(time.perf_counter() - t_all, 1),
    }
    result["table"] = format_table(result)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(result["table"])
    print(json.dumps(comparison, indent=1))
    print("files: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in files.items()))
    print(f"written {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
