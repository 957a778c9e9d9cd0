"""The sampler settings of an evaluation (rows of the report): teacher steps x CFG, TMD outer x inner, DMD2-v steps.

Row names and line names follow ToyBench's (tmd_core/toy/evaluate.py), so the two reports read alike:
"teacher 50 steps CFG 5" / "teacher Euler 4 NFE", "TMD outer 2 x inner 2", "DMD2-v 2-step".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError
from ..validation import MAX_STEPS


@dataclass(frozen=True)
class TeacherSetting:
    steps: int
    cfg: float

    @property
    def nfe(self) -> float:
        return 2 * self.steps if self.cfg != 1.0 else self.steps

    @property
    def name(self) -> str:
        return f"teacher {self.steps} steps CFG {self.cfg:g}" if self.cfg != 1.0 else f"teacher Euler {self.steps} NFE"

    @property
    def family(self) -> str:
        return "teacher CFG" if self.cfg != 1.0 else "teacher Euler"


def _steps(flag: str, text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if not 1 <= k <= MAX_STEPS:
        raise InputError(f"{flag}: {text!r} is not a step count from 1 to {MAX_STEPS}")
    return k


def _items(flag: str, text: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise InputError(f"{flag} is empty: give a comma-separated list, e.g. {EXAMPLES[flag]}")
    return items


EXAMPLES = {"--teacher-settings": "50x5,4x1 (steps x CFG)", "--tmd-settings": "1x1,2x2 (outer x inner)",
            "--dmd-steps": "1,2,4"}


def parse_teacher(text: str) -> list[TeacherSetting]:
    """"50x5,4x1" -> [TeacherSetting(50, 5.0), TeacherSetting(4, 1.0)] (CFG 1: no guidance)."""
    out = []
    for item in _items("--teacher-settings", text):
        m = re.fullmatch(r"(\d+)\s*[xX×]\s*([0-9.]+)", item)
        if not m:
            raise InputError(f"--teacher-settings: {item!r} is not STEPSxCFG, e.g. {EXAMPLES['--teacher-settings']}")
        cfg = float(m.group(2))
        if not 0 < cfg <= 100:
            raise InputError(f"--teacher-settings: CFG {cfg:g} in {item!r} is outside (0, 100] (1 turns guidance off)")
        out.append(TeacherSetting(_steps("--teacher-settings", m.group(1)), cfg))
    return list(dict.fromkeys(out))


def parse_tmd(text: str) -> list[tuple[int, int]]:
    """"1x1,2x2" -> [(1, 1), (2, 2)]: (outer M, inner N)."""
    out = []
    for item in _items("--tmd-settings", text):
        m = re.fullmatch(r"(\d+)\s*[xX×]\s*(\d+)", item)
        if not m:
            raise InputError(f"--tmd-settings: {item!r} is not OUTERxINNER, e.g. {EXAMPLES['--tmd-settings']}")
        out.append((_steps("--tmd-settings", m.group(1)), _steps("--tmd-settings", m.group(2))))
    return list(dict.fromkeys(out))


def parse_dmd(text: str) -> list[int]:
    """"1,2,4" -> [1, 2, 4]."""
    return list(dict.fromkeys(_steps("--dmd-steps", t) for t in _items("--dmd-steps", text)))


def slug(text: str) -> str:
    """A file-name-safe form of a row or prompt name (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "row"
