"""SVD img2vid over Image Only Checkpoint Loader's MODEL + CLIP_VISION + VAE (see :mod:`.native`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from ...vidseg_core.backbones.config import SVDConfig
from ...vidseg_core.backbones.svd import check_latents, clip_preprocess, edm_sigmas
from .bridge import _mm
from .native_base import ComfyBackbone

@dataclass
class ComfySVDCondition:
    """Both halves of one batch (row 0 = unconditional = zeros): CLIP embedding, concat latent, ``y``, guidance."""

    image_embeds: torch.Tensor   # [2, 1, D]
    concat_latent: torch.Tensor  # [2, 4, h, w] unscaled posterior mode of the noised first frame
    y: torch.Tensor              # [2, adm]  encode_adm(fps_id + 1, motion_bucket_id, cond_aug), shared
    guidance: torch.Tensor       # [T]

    @property
    def frames(self) -> int:
        return int(self.guidance.shape[0])


class ComfySVDBackbone(ComfyBackbone):
    """SVD img2vid from Image Only Checkpoint Loader's MODEL + CLIP_VISION + VAE (see module doc)."""

    family = "svd"
    vae_frames_independent = False  # the temporal decoder mixes the frames of each clip

    def __init__(self, model, clip_vision, vae, config: Optional[SVDConfig] = None, name: str = "comfy-svd"):
        super().__init__(name, config or SVDConfig(), model, vae)
        self.clip_vision = clip_vision
        self._sigmas = edm_sigmas(self.config)

    def sigmas(self) -> torch.Tensor:
        return self._sigmas

    def modules(self) -> Dict[str, torch.nn.Module]:
        return {**super().modules(), "image_encoder": self.clip_vision.model}

    def image_embedding(self, image: torch.Tensor) -> torch.Tensor:
        """``image_embeds`` ``[N, D]`` of frames in -1..1: the core's preprocessing, the vision model called directly."""
        vision = self.clip_vision
        _mm().load_models_gpu([vision.patcher])
        pixels = clip_preprocess(image.float(), int(getattr(vision, "image_size", 224)))
        with torch.no_grad():
            out = vision.model(pixel_values=pixels.to(vision.load_device), intermediate_output=-2)
        return out[2].float().to(self.device)

    def condition(self, frames: torch.Tensor, generator: torch.Generator) -> ComfySVDCondition:
        t, _, _ = self._check_frames(frames, "condition")
        cfg = self.config
        first = frames[:1].to(self.device, torch.float32)
        noise = self.randn(tuple(first.shape), generator).float()
        dev, vdt = self._load_vae()
        with torch.no_grad():
            latent, _ = self._mean_std((first + cfg.cond_aug * noise).to(dev, vdt))
        latent = latent.to(self.device)
        embeds = self.image_embedding(first)[:, None]
        y = self.patched.model.encode_adm(fps=cfg.fps_id + 1, motion_bucket_id=cfg.motion_bucket_id,
                                          augmentation_level=cfg.cond_aug).float().to(self.device)
        guidance = torch.linspace(cfg.min_guidance_scale, cfg.max_guidance_scale, t, dtype=torch.float32)
        return ComfySVDCondition(image_embeds=torch.cat([torch.zeros_like(embeds), embeds]),
                                 concat_latent=torch.cat([torch.zeros_like(latent), latent]),
                                 y=y.expand(2, -1).clone(), guidance=guidance.to(self.device))

    def denoised(self, x, step, cond, conditional_only: bool = False) -> torch.Tensor:
        sig = self._check_denoise_args(step, cond, ComfySVDCondition)
        r, t, c, h, w = check_latents(x, cond)
        halves = 1 if conditional_only else 2
        first = 2 - halves

        def per_row(v):  # [2, ...] -> rows [run, half, frame]
            v = v.float()[first:]
            return v.view(1, halves, 1, *v.shape[1:]).expand(r, halves, t, *v.shape[1:]).reshape(-1, *v.shape[1:])

        rows = x.float().unsqueeze(1).expand(r, halves, t, c, h, w).reshape(-1, c, h, w)
        self._prepare_controller(int(step), r, t, (h, w), halves)
        d = self._evaluate(rows, float(sig[step]), halves, r, t, c_concat=per_row(cond.concat_latent),
                           c_crossattn=per_row(cond.image_embeds), y=per_row(cond.y), num_video_frames=t)
        d = d.view(r, halves, t, c, h, w)
        if conditional_only:
            return d[:, 0].to(x.dtype)
        scale = cond.guidance.to(d.device, torch.float32).view(1, t, 1, 1, 1)
        return (d[:, 0] + scale * (d[:, 1] - d[:, 0])).to(x.dtype)
