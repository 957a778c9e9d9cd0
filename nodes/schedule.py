"""TMDSchedule: outer (transitions) and inner (flow-head) steps and their shifted grids."""

from __future__ import annotations

from ..tmd_core.schedule import TMDSchedule as Schedule


class TMDSchedule:
    DESCRIPTION = "Outer steps (backbone runs) and inner steps (flow-head runs per transition); effective NFE = M(1+(N-1)H/L)."
    CATEGORY = "TMD/sampling"
    RETURN_TYPES = ("TMD_SCHEDULE",)
    RETURN_NAMES = ("schedule",)
    OUTPUT_TOOLTIPS = ("Settings for TMDSampler.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "outer_steps": ("INT", {"default": 2, "min": 1, "max": 50, "tooltip": "Transitions M: each runs the backbone once. 1-3 is the point of TMD."}),
                "inner_steps": ("INT", {"default": 2, "min": 1, "max": 32, "tooltip": "Flow-head steps N per transition; each costs H/L of a full forward."}),
                "outer_shift": ("FLOAT", {"default": 10.0, "min": 0.1, "max": 100.0, "step": 0.1, "tooltip": "Shift γ of the outer time grid (paper: 10). Higher spends more steps near noise."}),
                "inner_shift": ("FLOAT", {"default": 10.0, "min": 0.1, "max": 100.0, "step": 0.1, "tooltip": "Shift γ of the inner grid (paper: 10)."}),
            },
            "optional": {
                "sigmas": ("SIGMAS", {"tooltip": "Explicit outer times (descending, ending in 0); overrides outer_steps and outer_shift."}),
            },
        }

    def make(self, outer_steps, inner_steps, outer_shift, inner_shift, sigmas=None):
        override = None if sigmas is None else tuple(float(v) for v in sigmas.flatten().tolist())
        return (Schedule(outer_steps=outer_steps, inner_steps=inner_steps, outer_shift=outer_shift,
                         inner_shift=inner_shift, outer_times_override=override),)
