"""Toy-world nodes (docs/toy_world.md): its text encoder, empty latent and decoder, so a TMD workflow runs
on nothing but the files the pack ships (toy/toy_tmd.safetensors in TMDModelLoader).

The toy latent is 16 channels x 2 latent frames x 4 x 4 (the toy VAE packs 4 frames x 8x8 pixels, as Wan's VAE),
already normalised: TMDSampler passes it through without Wan's mean/std, and TMDToyDecode decodes it with the
shipped toy VAE (its own mean/std included).
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..tmd_core.errors import InputError
from ..tmd_core.toy.codec import decode_latents
from ..tmd_core.toy.demo import check_toy_prompts
from ..tmd_core.toy.latent import LATENT_SHAPE
from ..tmd_core.toy.text import VOCAB, ToyTextEncoder
from . import host


class TMDToyTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TMDToyTextEncode",
            display_name="TMD Toy Text Encode",
            category="TMD/toy",
            description=("Encodes a toy-world prompt such as 'a red circle moving left fast' (colour, shape, direction, "
                         "speed). Unknown words, and prompts of more than 8 words, are an error that lists the words it knows."),
            inputs=[io.String.Input("text", multiline=True, default="a red circle moving left fast", tooltip="Words the toy world knows: " + ", ".join(VOCAB[2:]))],
            outputs=[io.Conditioning.Output(display_name="conditioning", tooltip="Tensor[1, 8, 32] toy text embedding, for TMDSampler with a toy model.")],
        )  # fmt: skip

    @classmethod
    def execute(cls, text) -> io.NodeOutput:
        check_toy_prompts("text", [text])
        context = ToyTextEncoder().encode([text]).to(host.output_device())
        return io.NodeOutput([[context, {"pooled_output": None}]])


class TMDToyEmptyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TMDToyEmptyLatent",
            display_name="TMD Toy Empty Latent",
            category="TMD/toy",
            description="An empty toy-world latent (8 frames of 32x32 pixels) giving TMDSampler the size of the videos.",
            inputs=[io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Videos per run (noise from one seed for the whole batch).")],
            outputs=[io.Latent.Output(display_name="latent", tooltip=f"Zeros Tensor[batch, {', '.join(map(str, LATENT_SHAPE))}].")],
        )  # fmt: skip

    @classmethod
    def execute(cls, batch_size) -> io.NodeOutput:
        return io.NodeOutput({"samples": torch.zeros((batch_size, *LATENT_SHAPE), device=host.output_device())})


class TMDToyDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TMDToyDecode",
            display_name="TMD Toy Decode",
            category="TMD/toy",
            description="Decodes toy-world latents into video frames with the shipped toy VAE, for CreateVideo.",
            inputs=[
                io.Latent.Input("samples", tooltip="Toy latent from TMDSampler with a toy model (a Wan2.1 latent has 16 channels too but decodes to noise here: use VAEDecode)."),
                io.Int.Input("scale", default=8, min=1, max=32, tooltip="Nearest-neighbour upscale of the 32x32 frames, for viewing."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="Frames of every video in the batch, one after the other: IMAGE [batch x 8, 32 x scale, 32 x scale, 3].")],
        )  # fmt: skip

    @classmethod
    def execute(cls, samples, scale) -> io.NodeOutput:
        x = samples["samples"]
        if x.ndim != 5 or x.shape[1] != LATENT_SHAPE[0]:
            raise InputError(f"TMDToyDecode decodes toy latents [batch, {LATENT_SHAPE[0]}, frames, h, w], got "
                             f"{tuple(x.shape)}: use VAEDecode for Wan latents")
        return io.NodeOutput(host.images_from_clips(decode_latents(x.cpu(), host.toy_vae()), scale))
