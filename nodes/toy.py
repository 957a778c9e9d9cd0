"""Toy-world nodes (docs/toy_world.md): its text encoder, empty latent and decoder, so a TMD workflow runs
on nothing but the files the pack ships (toy/toy_tmd.safetensors in TMDModelLoader).

The toy latent is 16 channels x 2 latent frames x 4 x 4 (the toy VAE packs 4 frames x 8x8 pixels, as Wan's VAE),
already normalised: TMDSampler passes it through without Wan's mean/std, and TMDToyDecode decodes it with the
shipped toy VAE (its own mean/std included).
"""

from __future__ import annotations

import torch

from ..tmd_core.errors import InputError
from ..tmd_core.toy.codec import decode_latents
from ..tmd_core.toy.demo import check_toy_prompts
from ..tmd_core.toy.latent import LATENT_SHAPE
from ..tmd_core.toy.text import VOCAB, ToyTextEncoder
from . import host


class TMDToyTextEncode:
    DESCRIPTION = ("Encodes a toy-world prompt such as 'a red circle moving left fast' (colour, shape, direction, speed). "
                   "Unknown words, and prompts of more than 8 words, are an error that lists the words it knows.")
    CATEGORY = "TMD/toy"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Tensor[1, 8, 32] toy text embedding, for TMDSampler with a toy model.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {
            "multiline": True, "default": "a red circle moving left fast",
            "tooltip": "Words the toy world knows: " + ", ".join(VOCAB[2:]),
        })}}

    def encode(self, text):
        check_toy_prompts("text", [text])
        context = ToyTextEncoder().encode([text]).to(host.output_device())
        return ([[context, {"pooled_output": None}]],)


class TMDToyEmptyLatent:
    DESCRIPTION = "An empty toy-world latent (8 frames of 32x32 pixels) giving TMDSampler the size of the videos."
    CATEGORY = "TMD/toy"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = (f"Zeros Tensor[batch, {', '.join(map(str, LATENT_SHAPE))}].",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos per run (noise from one seed for the whole batch)."})}}

    def make(self, batch_size):
        return ({"samples": torch.zeros((batch_size, *LATENT_SHAPE), device=host.output_device())},)


class TMDToyDecode:
    DESCRIPTION = "Decodes toy-world latents into video frames with the shipped toy VAE, for CreateVideo."
    CATEGORY = "TMD/toy"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Frames of every video in the batch, one after the other: IMAGE [batch x 8, 32 x scale, 32 x scale, 3].",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT", {"tooltip": "Toy latent from TMDSampler with a toy model (a Wan2.1 latent has 16 channels too but decodes to noise here: use VAEDecode)."}),
            "scale": ("INT", {"default": 8, "min": 1, "max": 32, "tooltip": "Nearest-neighbour upscale of the 32x32 frames, for viewing."}),
        }}

    def decode(self, samples, scale):
        x = samples["samples"]
        if x.ndim != 5 or x.shape[1] != LATENT_SHAPE[0]:
            raise InputError(f"TMDToyDecode decodes toy latents [batch, {LATENT_SHAPE[0]}, frames, h, w], got "
                             f"{tuple(x.shape)}: use VAEDecode for Wan latents")
        return (host.images_from_clips(decode_latents(x.cpu(), host.toy_vae()), scale),)
