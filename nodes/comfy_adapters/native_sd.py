"""SD 2.x over Load Checkpoint's MODEL + CLIP + VAE: the authors' SD sampler (see :mod:`.native`)."""
from __future__ import annotations

from typing import List, Optional

import torch

from ...vidseg_core.backbones.config import SD21Config
from ...vidseg_core.backbones.sd21 import SD21Condition, schedule_sigmas, step_timesteps
from ...vidseg_core.errors import InputError
from .native_base import ComfyBackbone

class ComfySD21Backbone(ComfyBackbone):
    """SD 2.x from Load Checkpoint's MODEL + CLIP + VAE, the authors' SD sampler (see module doc)."""

    family = "sd"

    def __init__(self, model, clip, vae, config: Optional[SD21Config] = None, name: str = "comfy-sd21"):
        ptype = "v_prediction" if "V_PREDICTION" in str(getattr(model.model, "model_type", "")) else "epsilon"
        cfg = (config or SD21Config()).with_(prediction_type=ptype)
        super().__init__(name, cfg, model, vae)
        tokens = clip.tokenize("")
        emb = clip.encode_from_tokens(tokens)
        emb = emb[0] if isinstance(emb, (tuple, list)) else emb
        #: the empty prompt's embedding [1, 77, C] (uncond: zeros, as the authors)
        self.empty_embedding = emb.detach().to("cpu", torch.float32).clone()
        self._sigmas = schedule_sigmas(cfg)
        self._timesteps = step_timesteps(cfg)

    def sigmas(self) -> torch.Tensor:
        return self._sigmas

    def timesteps(self) -> List[int]:
        return list(self._timesteps)

    def condition(self, frames: torch.Tensor, generator: torch.Generator) -> SD21Condition:
        e = self.empty_embedding.to(self.device, self.dtype)
        return SD21Condition(torch.cat([torch.zeros_like(e), e]))

    def denoised(self, x, step, cond, conditional_only: bool = False) -> torch.Tensor:
        sig = self._check_denoise_args(step, cond, SD21Condition)
        if not torch.is_tensor(x) or x.ndim != 5 or x.shape[2] != 4:
            raise InputError(f"denoised expects latents [R,T,4,h,w]; got {getattr(x, 'shape', type(x))}.",
                             "Add the run dimension.")
        r, t, c, h, w = x.shape
        halves = 1 if conditional_only else 2
        rows = x.float().unsqueeze(1).expand(r, halves, t, c, h, w).reshape(r * halves * t, c, h, w)
        ctx = cond.context.float()[2 - halves:]
        n_tok, dim = ctx.shape[-2:]
        ctx = ctx.view(1, halves, 1, n_tok, dim).expand(r, halves, t, n_tok, dim).reshape(-1, n_tok, dim)
        self._prepare_controller(int(step), r, t, (h, w), halves)
        d = self._evaluate(rows, float(sig[step]), halves, r, t, c_crossattn=ctx).view(r, halves, t, c, h, w)
        if conditional_only:
            return d[:, 0].to(x.dtype)
        return (d[:, 0] + self.config.guidance_scale * (d[:, 1] - d[:, 0])).to(x.dtype)
