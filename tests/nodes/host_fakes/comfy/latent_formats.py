"""Stand-in for `comfy.latent_formats`: Wan2.1's 16-channel latent normalisation (values from ComfyUI 0.3.64)."""

import torch


class LatentFormat:
    scale_factor = 1.0
    latent_channels = 4
    latent_dimensions = 2
    latent_rgb_factors = None
    latent_rgb_factors_bias = None
    taesd_decoder_name = None

    def process_in(self, latent):
        return latent * self.scale_factor

    def process_out(self, latent):
        return latent / self.scale_factor


class Wan21(LatentFormat):
    latent_channels = 16
    latent_dimensions = 3

    def __init__(self):
        self.scale_factor = 1.0
        mean = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]  # fmt: skip
        std = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
               3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]  # fmt: skip
        self.latents_mean = torch.tensor(mean).view(1, self.latent_channels, 1, 1, 1)
        self.latents_std = torch.tensor(std).view(1, self.latent_channels, 1, 1, 1)

    def process_in(self, latent):  # raw VAE space -> the model's normalised space
        mean = self.latents_mean.to(latent.device, latent.dtype)
        std = self.latents_std.to(latent.device, latent.dtype)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent):  # normalised -> raw VAE space (what VAEDecode expects)
        mean = self.latents_mean.to(latent.device, latent.dtype)
        std = self.latents_std.to(latent.device, latent.dtype)
        return latent * std / self.scale_factor + mean
