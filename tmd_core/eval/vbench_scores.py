"""VBench as the scorer of `tmd eval`: its dimensions, the weights each needs, and its scaled scores.

VBench 0.1.5 pins transformers==4.33.2 and numpy<2, so it lives in its own environment
(scripts/setup_vbench.sh). This module never imports it: it runs `vbench_driver.py` with that environment's
python and exchanges JSON files. Every check that can fail (the interpreter, the package, an unknown
dimension, a dimension's missing weights) runs in `preflight`, before anything is generated.

Total / quality / semantic follow VBench's own leaderboard rule (VBench scripts/constant.py and
cal_final_score.py): each dimension is min-max normalised with VBench's published bounds, the quality
and semantic scores are the weighted means of the normalised dimensions of their group that were run
(dynamic degree weighs 0.5, the others 1), and total = (4 quality + 1 semantic) / 5. With only some
dimensions run these are the scores of those dimensions, not comparable with a full VBench total; the
report says which dimensions went in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

DRIVER = Path(__file__).with_name("vbench_driver.py")
QUALITY_WEIGHT, SEMANTIC_WEIGHT = 4.0, 1.0


@dataclass(frozen=True)
class Dimension:
    group: str  # "quality" | "semantic"
    lo: float  # VBench's normalisation bounds
    hi: float
    weight: float
    files: tuple[str, ...]  # weights VBench loads, relative to its cache folder (VBENCH_CACHE_DIR)
    standard_prompts: bool = False  # needs VBench's own prompts (no custom_input)
    packages: tuple[str, ...] = ()  # modules VBench imports for it that `pip install vbench` does not bring


_CLIP_B = "clip_model/ViT-B-32.pt"
_GRIT = ("grit_model/grit_b_densecap_objectdet.pth",)
_DETECTRON = ("detectron2",)  # GRiT's dimensions; VBench's README installs it separately
_VICLIP = ("ViCLIP/ViClip-InternVid-10M-FLT.pth",)
DIMENSIONS: dict[str, Dimension] = {
    "subject_consistency": Dimension("quality", 0.1462, 1.0, 1.0, ("dino_model/dino_vitbase16_pretrain.pth",
                                                                    "dino_model/facebookresearch_dino_main/hubconf.py")),
    "background_consistency": Dimension("quality", 0.2615, 1.0, 1.0, (_CLIP_B,)),
    "temporal_flickering": Dimension("quality", 0.6293, 1.0, 1.0, ()),
    "motion_smoothness": Dimension("quality", 0.706, 0.9975, 1.0, ("amt_model/amt-s.pth",)),
    "dynamic_degree": Dimension("quality", 0.0, 1.0, 0.5, ("raft_model/models/raft-things.pth",)),
    "aesthetic_quality": Dimension("quality", 0.0, 1.0, 1.0, ("clip_model/ViT-L-14.pt",
                                                               "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth")),
    "imaging_quality": Dimension("quality", 0.0, 1.0, 1.0, ("pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",)),
    "object_class": Dimension("semantic", 0.0, 1.0, 1.0, _GRIT, True, _DETECTRON),
    "multiple_objects": Dimension("semantic", 0.0, 1.0, 1.0, _GRIT, True, _DETECTRON),
    "human_action": Dimension("semantic", 0.0, 1.0, 1.0, ("umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth",)),
    "color": Dimension("semantic", 0.0, 1.0, 1.0, _GRIT, True, _DETECTRON),
    "spatial_relationship": Dimension("semantic", 0.0, 1.0, 1.0, _GRIT, True, _DETECTRON),
    "scene": Dimension("semantic", 0.0, 0.8222, 1.0, ("caption_model/tag2text_swin_14m.pth",), True),
    "appearance_style": Dimension("semantic", 0.0009, 0.2855, 1.0, (_CLIP_B,), True),
    "temporal_style": Dimension("semantic", 0.0, 0.364, 1.0, _VICLIP),
    "overall_consistency": Dimension("semantic", 0.0, 0.364, 1.0, _VICLIP),
}
NO_WEIGHTS = tuple(d for d, v in DIMENSIONS.items() if not v.files)  # run anywhere: ("temporal_flickering",)


def parse_dimensions(text: str) -> list[str]:
    """Comma-separated VBench dimension names ("all": the 16 of VBench); InputError for an unknown one."""
    names = list(DIMENSIONS) if text.strip() == "all" else [d.strip() for d in text.split(",") if d.strip()]
    if not names:
        raise InputError("--dimensions is empty: name VBench dimensions, e.g. temporal_flickering")
    unknown = [d for d in names if d not in DIMENSIONS]
    if unknown:
        raise InputError(f"--dimensions: unknown VBench dimension {', '.join(map(repr, unknown))}; VBench 0.1.5 has "
                         f"{', '.join(DIMENSIONS)} (or 'all')")
    return list(dict.fromkeys(names))


def missing_weights(dimensions, cache_dir) -> dict[str, list[str]]:
    """{dimension: [absolute paths of the weight files VBench expects and that are absent]} (only dims missing some)."""
    cache = Path(cache_dir)
    out = {}
    for d in dimensions:
        gone = [str(cache / f) for f in DIMENSIONS[d].files if not (cache / f).is_file()]
        if gone:
            out[d] = gone
    return out


def _driver(python, *args, timeout: float = 600, env: dict | None = None) -> dict:
    """Run the driver with VBench's interpreter; its answer is the last 'TMD-DRIVER-JSON ' line."""
    try:
        proc = subprocess.run([str(python), str(DRIVER), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})
    except OSError as e:
        raise InputError(f"--vbench-python: cannot run {python} ({e.strerror or e}): give the python of the VBench "
                         "environment that scripts/setup_vbench.sh made, e.g. ~/vbench_env/bin/python") from e
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("TMD-DRIVER-JSON ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise InputError(f"VBench in {python} failed ({' '.join(map(str, args[:1]))}): {tail}")
    return json.loads(lines[-1].removeprefix("TMD-DRIVER-JSON "))


def check_environment(python) -> dict:
    """{vbench, torch, cuda, cache_dir, python} of the VBench environment, or InputError saying what is missing."""
    if python is None:
        raise InputError("VBench is not set up: `tmd eval` scores Wan videos with VBench in its own environment "
                         "(it pins transformers==4.33.2 and numpy<2). Make one with scripts/setup_vbench.sh DIR and "
                         "pass --vbench-python DIR/bin/python (or score the toy world with --toy)")
    path = Path(python)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise InputError(f"--vbench-python: no executable python at {path}: make the VBench environment with "
                         "scripts/setup_vbench.sh DIR and pass DIR/bin/python")
    probe = subprocess.run([str(path), "-c", "import vbench"], capture_output=True, text=True, timeout=600)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise InputError(f"--vbench-python: {path} cannot import vbench ({last}): make the VBench environment with "
                         "scripts/setup_vbench.sh DIR (vbench==0.1.5 and its pins) and pass DIR/bin/python")
    return _driver(path, "check")


def preflight(python, dimensions) -> dict:
    """Everything VBench needs, checked before generation: the environment and every dimension's weights."""
    env = check_environment(python)
    packages = env.get("packages", {})
    lacking = {d: [m for m in DIMENSIONS[d].packages if not packages.get(m)] for d in dimensions}
    lacking = {d: ms for d, ms in lacking.items() if ms}
    if lacking:
        names = sorted({m for ms in lacking.values() for m in ms})
        raise InputError(f"the VBench environment {python} lacks {', '.join(names)}, which "
                         f"{', '.join(lacking)} need{'s' if len(lacking) == 1 else ''}: install it there as VBench's "
                         "README says (pip install 'detectron2@git+https://github.com/facebookresearch/detectron2.git'), "
                         "or leave those dimensions out")
    gone = missing_weights(dimensions, env["cache_dir"])
    if gone:
        lines = "; ".join(f"{d} needs {', '.join(files)}" for d, files in gone.items())
        raise InputError(f"VBench weights missing under {env['cache_dir']} (VBENCH_CACHE_DIR): {lines}. VBench "
                         "downloads them on first use on a machine with internet access; copy them there, or leave "
                         f"those dimensions out (needing no weights: {', '.join(NO_WEIGHTS)})")
    return env


def standard_prompts(python, dimensions) -> list[str]:
    """VBench's standard prompt suite for `dimensions` (VBench_full_info.json, from the VBench environment)."""
    return list(dict.fromkeys(_driver(python, "prompts", *dimensions)["prompts"]))


def run_vbench(python, folders: dict[str, dict], dimensions, work_dir, device: str | None = None,
               standard: bool = False) -> dict:
    """Score video folders with VBench's own API in its environment.

    Args:
        folders: {name: {"path": folder of mp4 files, "prompts": {file name: prompt}}}.
        standard: VBench's 'vbench_standard' mode (files named '<prompt>-<i>.mp4'), else 'custom_input'.
    Returns:
        {name: {dimension: {"score": float, "videos": [{"video", "score"}]}}}.
    """
    from ..checkpoint import atomic_write_text

    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    staged = {}
    for n, f in folders.items():  # VBench reads whole folders: stage exactly this row's videos (symlinks)
        stage = work / n / "videos"
        if stage.is_dir():
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
        for name in f["prompts"]:
            (stage / name).symlink_to(Path(f["path"]).resolve() / name)
        staged[n] = {"path": str(stage), "prompts": {str(stage / k): v for k, v in f["prompts"].items()}}
    spec = {"dimensions": list(dimensions), "device": device, "work_dir": str(work),
            "mode": "vbench_standard" if standard else "custom_input", "folders": staged}
    spec_path, out_path = work / "vbench_spec.json", work / "vbench_scores.json"
    atomic_write_text(spec_path, json.dumps(spec, indent=1) + "\n")
    _driver(python, "run", spec_path, out_path, timeout=24 * 3600)
    return json.loads(out_path.read_text())


def scaled_scores(scores: dict[str, float]) -> dict[str, float | None]:
    """VBench's total / quality / semantic from raw dimension scores (only those given; None: no dimension)."""
    groups: dict[str, list[tuple[float, float]]] = {"quality": [], "semantic": []}
    for d, v in scores.items():
        if v is None:
            continue
        dim = DIMENSIONS[d]
        groups[dim.group].append(((v - dim.lo) / (dim.hi - dim.lo), dim.weight))
    out: dict[str, float | None] = {g: (sum(v * w for v, w in xs) / sum(w for _, w in xs) if xs else None)
                                    for g, xs in groups.items()}
    parts = [(out["quality"], QUALITY_WEIGHT), (out["semantic"], SEMANTIC_WEIGHT)]
    parts = [(v, w) for v, w in parts if v is not None]
    out["total"] = sum(v * w for v, w in parts) / sum(w for _, w in parts) if parts else None
    return {"total": out["total"], "quality": out["quality"], "semantic": out["semantic"]}
