"""TMDSampler: Algorithm 1 on a TMD_MODEL, from native CONDITIONING and LATENT to a LATENT for VAEDecode."""

from __future__ import annotations

from ..tmd_core.noise import make_noise
from ..tmd_core.sampler import sample_tmd
from . import host


class TMDSampler:
    DESCRIPTION = "Few-step TMD sampling: backbone once per transition, flow head for the inner steps. No CFG (distilled in)."
    CATEGORY = "TMD/sampling"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Raw VAE-space latent (de-normalised), ready for VAEDecode.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("TMD_MODEL", {"tooltip": "From TMDModelLoader."}),
            "positive": ("CONDITIONING", {"tooltip": "Prompt embedding (CLIPTextEncode with the umt5 text encoder)."}),
            "latent": ("LATENT", {"tooltip": "Empty video latent giving the size (EmptyHunyuanLatentVideo); its values are not used."}),
            "schedule": ("TMD_SCHEDULE", {"tooltip": "From TMDSchedule."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Noise seed (CPU generator: same video on any device)."}),
        }}

    def sample(self, model, positive, latent, schedule, seed):
        context = host.context_from_conditioning(positive)
        shape = tuple(latent["samples"].shape)
        device = host.load_to_device(model)
        noise = make_noise(shape, seed=seed, device=device)
        total = schedule.outer_steps * schedule.inner_steps
        cb = host.sampling_callback(model, total, schedule.inner_steps)
        x0 = sample_tmd(model.model, noise, context.to(device), schedule, callback=cb)
        out = dict(latent)
        out["samples"] = host.denormalise_latent(x0, model.model).to(host.output_device())
        return (out,)
