"""TMDSampler: Algorithm 1 on a TMD_MODEL, from native CONDITIONING and LATENT to a LATENT for VAEDecode."""

from __future__ import annotations

from comfy_api.latest import io

from ..tmd_core.errors import InputError
from ..tmd_core.noise import make_noise
from ..tmd_core.sampler import sample_tmd
from ..tmd_core.validation import SEED_MAX, check_seed
from . import host
from .native_patch import load_native, native_spec


class TMDSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TMDSampler",
            display_name="TMD Sampler",
            category="TMD/sampling",
            description="Few-step TMD sampling: backbone once per transition, flow head for the inner steps. No CFG (distilled in).",
            inputs=[
                host.TMD_MODEL.Input("model", tooltip="From TMDModelLoader, or TMDApplyToModel (a native MODEL + TMD weights)."),
                io.Conditioning.Input("positive", tooltip="Prompt embedding (CLIPTextEncode with the umt5 text encoder)."),
                io.Latent.Input("latent", tooltip="Empty video latent giving the size (EmptyHunyuanLatentVideo); its values are not used."),
                host.TMD_SCHEDULE.Input("schedule", tooltip="From TMDSchedule."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True, tooltip="Noise seed, 0 to 2^32-1 (CPU generator: same video on any device; torch uses 32 bits of a seed, so larger ones would repeat smaller ones' noise)."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Raw VAE-space latent (de-normalised), ready for VAEDecode.")],
        )  # fmt: skip

    @classmethod
    def execute(cls, model, positive, latent, schedule, seed) -> io.NodeOutput:
        check_seed("seed", seed)
        if not all(hasattr(schedule, a) for a in ("outer_times", "inner_times", "outer_steps", "inner_steps")):
            raise InputError(f"schedule must come from a TMDSchedule node, got {type(schedule).__name__}")
        if not isinstance(latent, dict) or not hasattr(latent.get("samples"), "shape"):
            raise InputError("latent must be a LATENT (e.g. from EmptyHunyuanLatentVideo or TMD Toy Empty Latent)")
        context = host.context_from_conditioning(positive)
        shape = tuple(latent["samples"].shape)
        spec = native_spec(model)
        if spec is not None:  # a native MODEL + TMD weights: ComfyUI's WanModel modules (docs/host.md §12)
            tmd = load_native(model, spec, shape)
            device = tmd.device
        else:
            device = host.load_to_device(model)
            tmd = model.model
        noise = make_noise(shape, seed=seed, device=device)
        total = schedule.outer_steps * schedule.inner_steps
        cb = host.sampling_callback(model, total, schedule.inner_steps)
        x0 = sample_tmd(tmd, noise, context.to(device), schedule, callback=cb)
        out = dict(latent)
        out["samples"] = host.denormalise_latent(x0, tmd).to(host.output_device())
        return io.NodeOutput(out)
