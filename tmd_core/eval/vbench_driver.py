"""Run inside VBench's own environment (`tmd eval --vbench-python PATH`); never imported by the pack.

usage: python vbench_driver.py check                 -> JSON {vbench, torch, cuda, cache_dir, python, packages}
       python vbench_driver.py prompts DIM [DIM ...]  -> JSON {"prompts": [...]} VBench's standard prompts for the dims
       python vbench_driver.py run SPEC.json OUT.json -> runs VBench(...).evaluate per video folder, writes OUT.json

SPEC: {"dimensions": [...], "device": "cpu" | "cuda" | null, "work_dir": str, "mode": "custom_input" |
"vbench_standard", "folders": {name: {"path": folder, "prompts": {file name: prompt}}}}
OUT:  {name: {dimension: {"score": float, "videos": [{"video": file name, "score": float}]}}}
Only the standard library and vbench are used, and the JSON exchange is the whole interface.
"""

import json
import os
import sys

if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # run as a script: the pack's own modules must not shadow `vbench`


def _check():
    from importlib.metadata import version
    from importlib.util import find_spec

    import torch
    import vbench  # noqa: F401
    from vbench.utils import CACHE_DIR

    return {"vbench": version("vbench"), "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "cache_dir": CACHE_DIR, "python": sys.executable,
            "packages": {name: find_spec(name) is not None for name in ("detectron2",)}}


def _prompts(dimensions):
    import vbench

    with open(os.path.join(os.path.dirname(vbench.__file__), "VBench_full_info.json")) as f:
        info = json.load(f)
    return {"prompts": [d["prompt_en"] for d in info if set(dimensions) & set(d["dimension"])]}


def _score(value):
    return float(value) if isinstance(value, (int, float)) else float(value.item())


def _run(spec_path, out_path):
    import torch
    from vbench import VBench

    with open(spec_path) as f:
        spec = json.load(f)
    device = spec.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    full_info = os.path.join(os.path.dirname(__import__("vbench").__file__), "VBench_full_info.json")
    out = {}
    for name, folder in spec["folders"].items():
        work = os.path.join(spec["work_dir"], name)
        bench = VBench(torch.device(device), full_info, work)
        kwargs = {"mode": spec["mode"]}
        if spec["mode"] == "custom_input":
            kwargs["prompt_list"] = folder["prompts"]
        results = bench.evaluate(videos_path=folder["path"], name="results", dimension_list=spec["dimensions"],
                                 local=True, **kwargs)
        if results is None:  # VBench 0.1.5 returns nothing: read the file it wrote
            with open(os.path.join(work, "results_eval_results.json")) as f:
                results = json.load(f)
        out[name] = {dim: {"score": _score(avg),
                           "videos": [{"video": os.path.basename(v["video_path"]), "score": _score(v["video_results"])}
                                      for v in per_video if isinstance(v, dict) and "video_path" in v]}
                     for dim, (avg, per_video) in results.items()}
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, out_path)
    return {"written": out_path}


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    verb, rest = argv[0], argv[1:]
    result = {"check": lambda: _check(), "prompts": lambda: _prompts(rest),
              "run": lambda: _run(rest[0], rest[1])}[verb]()
    print("TMD-DRIVER-JSON " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
