"""TMDSchedule: outer (transitions) and inner (flow-head) steps and their shifted grids."""

from __future__ import annotations

from comfy_api.latest import io

from ..tmd_core.schedule import TMDSchedule as Schedule
from . import host


class TMDSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TMDSchedule",
            display_name="TMD Schedule",
            category="TMD/sampling",
            description="Outer steps (backbone runs) and inner steps (flow-head runs per transition); effective NFE = M(1+(N-1)H/L).",
            inputs=[
                io.Int.Input("outer_steps", default=2, min=1, max=50, tooltip="Transitions M: each runs the backbone once. 1-3 is the point of TMD."),
                io.Int.Input("inner_steps", default=2, min=1, max=32, tooltip="Flow-head steps N per transition; each costs H/L of a full forward."),
                io.Float.Input("outer_shift", default=10.0, min=0.1, max=100.0, step=0.1, tooltip="Shift γ of the outer time grid (paper: 10). Higher spends more steps near noise."),
                io.Float.Input("inner_shift", default=10.0, min=0.1, max=100.0, step=0.1, tooltip="Shift γ of the inner grid (paper: 10)."),
                io.Sigmas.Input("sigmas", optional=True, tooltip="Explicit outer times (descending, ending in 0); overrides outer_steps and outer_shift."),
            ],
            outputs=[host.TMD_SCHEDULE.Output(display_name="schedule", tooltip="Settings for TMDSampler.")],
        )  # fmt: skip

    @classmethod
    def execute(cls, outer_steps, inner_steps, outer_shift, inner_shift, sigmas=None) -> io.NodeOutput:
        override = None if sigmas is None else tuple(float(v) for v in sigmas.flatten().tolist())
        return io.NodeOutput(Schedule(outer_steps=outer_steps, inner_steps=inner_steps, outer_shift=outer_shift,
                                      inner_shift=inner_shift, outer_times_override=override))
