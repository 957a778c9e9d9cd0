"""Backbone and flow head computed with ComfyUI's own Wan2.1 modules (docs/host.md §12, docs/method.md §2).

`NativeTMD` is what `tmd_core.sample_tmd` samples when the TMD model is a native `MODEL` plus TMD weights:
it has the `TMDModel` interface (`config`, `backbone`, `head`), but every block, embedding and the output
layer are the modules of the MODEL's `comfy.ldm.wan.model.WanModel`, loaded, cast, LoRA-patched and
(partially) offloaded by ComfyUI, with ComfyUI's attention. Only the fusion layer and the gap embedding
(`NativeExtras`, the TMD-specific weights) are the pack's, and they run on ComfyUI's cast-aware ops too.

The split follows WanModel.forward_orig: embeddings, blocks 0 .. L-H-1 (backbone), then the fusion layer,
blocks L-H .. L-1 and Wan's head with the head's time conditioning emb(s) + emb_gap(s - r) (App. A.1).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn as nn
from diffusers.models.embeddings import TimestepEmbedding
from torch.func import functional_call

from ..tmd_core.fusion import GapTimeEmbedding, make_fusion
from ..tmd_core.model import BackboneOut, TMDConfig, wan_timestep
from ..tmd_core.validation import check_latent_and_context


def _to_host_ops(module: nn.Module, ops) -> None:
    """Replace every nn.Linear under `module` with ComfyUI's `ops.Linear` (same shape, meta weights): a
    cast-aware layer ComfyUI can leave on the offload device under partial loading (comfy/ops.py)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear) and not isinstance(child, ops.Linear):
            setattr(module, name, ops.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                             device="meta"))
        else:
            _to_host_ops(child, ops)


class NativeExtras(nn.Module):
    """The TMD weights a Wan2.1 MODEL lacks: `fusion.*` (docs/method.md §2.2) and `emb_gap.*` (App. A.1),
    with the same names as in a tmd/1 file. The equations are tmd_core's modules; the linear layers are
    ComfyUI's ops."""

    def __init__(self, fusion: str, dim: int, freq_dim: int):
        super().__init__()
        self.fusion = make_fusion(fusion, dim)
        self.emb_gap = GapTimeEmbedding(TimestepEmbedding(freq_dim, dim))

    @classmethod
    def from_state_dict(cls, sd: dict, fusion: str, dim: int, freq_dim: int, dtype: torch.dtype) -> NativeExtras:
        import comfy.ops

        with torch.device("meta"):
            extras = cls(fusion, dim, freq_dim)
        _to_host_ops(extras, comfy.ops.disable_weight_init)
        extras.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
        return extras.eval()


class NativeTMD(nn.Module):
    """Backbone B(x_t, t, c) and flow head over a native WanModel (the `TMDModel` interface of tmd_core).

    Args:
        wan: the MODEL's `comfy.ldm.wan.model.WanModel` (after `load_models_gpu`: patched and on its device).
        extras: NativeExtras of the TMD weights (loaded alongside).
        tmd_config: H, L, fusion and schedule defaults of the TMD weights.
        dtype: the compute dtype ComfyUI's apply_model uses (manual_cast_dtype, else the model's dtype).
        device: the MODEL's load device (inputs go there; under partial loading some weights stay offloaded
            and ComfyUI's ops cast them to the input's device).
        transformer_options: the MODEL's transformer_options (attention overrides reach optimized_attention).
        latent_format: the MODEL's latent format (Wan21), for de-normalising the result.
        modulations: patched `modulation` tables of blocks and head, which ComfyUI's loader leaves unpatched
            (native_patch.patched_modulations); used in place of the module's own.
    """

    def __init__(self, wan: nn.Module, extras: NativeExtras, tmd_config: TMDConfig, dtype: torch.dtype,
                 device, transformer_options: dict | None = None, latent_format=None,
                 modulations: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.wan, self.extras, self.tmd_config, self.dtype = wan, extras, tmd_config, dtype
        self.device = torch.device(device)
        self.modulations = dict(modulations or {})  # "blocks.N" / "head" -> patched modulation (see native_patch)
        self.transformer_options = dict(transformer_options or {})
        self.latent_format = latent_format
        self.config = SimpleNamespace(in_channels=wan.in_dim, text_dim=wan.text_dim, patch_size=tuple(wan.patch_size))

    @property
    def head_blocks(self) -> int:
        return self.tmd_config.head_blocks

    @property
    def num_layers(self) -> int:
        return self.tmd_config.num_layers

    def _time_embed(self, t, batch: int, device) -> torch.Tensor:
        """emb(t) = Wan's time MLP on the sinusoid of the model timestep 1000 t (docs/method.md §1): Tensor[B, 1, D]."""
        from comfy.ldm.wan.model import sinusoidal_embedding_1d

        sin = sinusoidal_embedding_1d(self.wan.freq_dim, wan_timestep(t, batch, device)).to(self.dtype)
        return self.wan.time_embedding(sin).reshape(batch, 1, -1)

    def _call(self, name: str, module: nn.Module, args: tuple, kwargs: dict | None = None):
        """module(*args, **kwargs), with its patched modulation table when there is one."""
        table = self.modulations.get(name)
        if table is None:
            return module(*args, **(kwargs or {}))
        return functional_call(module, {"modulation": table}, args, kwargs or {})

    def _blocks(self, indices: range, h, e, out: BackboneOut) -> torch.Tensor:
        e0 = self.wan.time_projection(e).unflatten(2, (6, self.wan.dim))  # block modulation, as forward_orig
        for i in indices:
            h = self._call(f"blocks.{i}", self.wan.blocks[i], (h,),
                           {"e": e0, "freqs": out.rotary_emb, "context": out.context, "context_img_len": None,
                            "transformer_options": self.transformer_options})
        return h

    def _patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        """PE(x): Wan's patch embedding (fp32 conv, as forward_orig), tokens Tensor[B, T, D] in the compute dtype."""
        return self.wan.patch_embedding(x.float()).to(self.dtype).flatten(2).transpose(1, 2)

    def backbone(self, x_t: torch.Tensor, t, context: torch.Tensor) -> BackboneOut:
        """m = B(x_t, t, c): embeddings and blocks 0 .. L-H-1 (docs/method.md §2.1), once per transition."""
        check_latent_and_context(self.config, x_t, context)
        wan, device = self.wan, self.device
        B, _, F, H, W = x_t.shape
        x = x_t.to(device=device, dtype=self.dtype)
        if context.shape[0] != B:
            context = context.expand(B, -1, -1)
        freqs = wan.rope_encode(F, H, W, device=device, dtype=self.dtype)
        h = self._patch_embed(x)
        ctx = wan.text_embedding(context.to(device=device, dtype=self.dtype))
        out = BackboneOut(m=h, context=ctx, rotary_emb=freqs, latent_shape=tuple(x_t.shape),
                          t=torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(B))
        L, Hh = self.num_layers, self.head_blocks
        out.m = self._blocks(range(L - Hh), h, self._time_embed(t, B, device), out)
        return out

    def head(self, out: BackboneOut, y_s: torch.Tensor, s, r) -> torch.Tensor:
        """head(fuse(m, y_s, s), s, r): fusion (§2.2), blocks L-H .. L-1 and Wan's head, conditioned on
        emb(s) + emb_gap(s - r) (App. A.1). Returns Tensor[B, C, F, H, W] float32, read as u = (y_s - head)/s (Eq. 14)."""
        from comfy.ldm.wan.model import sinusoidal_embedding_1d

        wan = self.wan
        B, _, F, H, W = out.latent_shape
        device = out.m.device
        temb_s = self._time_embed(s, B, device)  # emb(s), Tensor[B, 1, D]
        fusion = self.extras.fusion
        # a bare parameter (α of the gated fusion) is not moved by ComfyUI's partial loading: pass it on the device
        params = {n: p.to(device) for n, p in fusion.named_parameters(recurse=False)}
        h = functional_call(fusion, params, (out.m, self._patch_embed(y_s.to(device)), temb_s[:, 0]))
        s_t = torch.as_tensor(s, dtype=torch.float64).reshape(-1)
        r_t = torch.as_tensor(r, dtype=torch.float64).reshape(-1)
        gap = sinusoidal_embedding_1d(wan.freq_dim, wan_timestep(s_t - r_t, B, device))
        e = temb_s + self.extras.emb_gap(gap.to(self.dtype)).to(self.dtype).reshape(B, 1, -1)
        L, Hh = self.num_layers, self.head_blocks
        h = self._blocks(range(L - Hh, L), h, e, out)
        h = self._call("head", wan.head, (h, e))
        pt, ph, pw = wan.patch_size
        return wan.unpatchify(h, (F // pt, H // ph, W // pw)).float()

    def effective_nfe(self, outer_steps: int, inner_steps: int) -> float:
        from ..tmd_core.schedule import effective_nfe

        return effective_nfe(outer_steps, inner_steps, self.head_blocks, self.num_layers)
