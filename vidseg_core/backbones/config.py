"""Typed settings of each backbone, defaulting to the authors' effective values.

Every number comes from docs/design/authors_code.md#effective-settings (the authors' published code,
README command lines).  Step indices index the 25-step schedule
(docs/design/authors_code.md#schedule-and-noise-levels).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Tuple


@dataclass(frozen=True)
class BackboneConfig:
    """Settings shared by SD 2.1 and SVD."""

    #: sampler steps of the schedule (docs/design/authors_code.md#schedule-and-noise-levels)
    num_steps: int = 25
    #: t_m: the clean latent is noised directly to this step ("add_noise"
    #: inversion, t_inv = t_m), and the modulation offset is applied here
    modulation_step: int = 22
    #: t_k: features are read at this step of the same (reference) trajectory
    feature_step: int = 24
    #: decoder blocks whose spatial self-attention queries are averaged (paper §4.1)
    feature_blocks: Tuple[int, ...] = (6, 7, 8)
    #: block c whose queries drive the correspondence refinement (paper §4.2)
    correspondence_block: int = 7
    #: frames per batch B (paper §4.1)
    batch_size: int = 14
    #: per-batch seed (the authors re-seed every batch with seed 1)
    seed: int = 1
    #: frames are resized *down* to multiples of this (no crop)
    size_multiple: int = 64
    #: at most this many pixels (frames x height x width) per VAE *encode* call, so that large
    #: frames are encoded fewer at a time (832x448: 2 frames a call, 512x512: 4); never more
    #: frames than ``decode_chunk``; None: ``decode_chunk`` frames whatever their size.  The
    #: posterior noise is drawn for the whole batch first, so only float rounding can change
    #: (docs/benchmarks.md#vae-encodings-memory-against-frames-per-call)
    encode_pixels: int | None = 1 << 20

    def with_(self, **changes) -> "BackboneConfig":
        return replace(self, **changes)


@dataclass(frozen=True)
class SD21Config(BackboneConfig):
    """Stable Diffusion 2.1 (docs/design/authors_code.md#effective-settings, column "sd")."""

    modulation_step: int = 22          # DDPM t = 119
    #: "epsilon" for v2-1_512-ema-pruned, "v_prediction" for v2-1_768-ema-pruned
    prediction_type: str = "epsilon"
    #: classifier-free guidance scale (VanillaCFG(scale=5)); cond = "" embedding, uncond = zeros
    guidance_scale: float = 5.0
    #: LegacyDDPMDiscretization: linear-in-sqrt betas 0.00085 -> 0.012 over 1000 steps
    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_train_timesteps: int = 1000
    #: modulation block b_m and layer(s) (docs/design/authors_code.md#masked-modulation-as-published)
    modulation_block: int = 7
    modulation_layers: Tuple[str, ...] = ("spatial_cross",)
    #: decoder attention layers whose q/k are taken from the reference pass
    injection_blocks: Tuple[int, ...] = (3, 4, 5, 6, 7, 8, 9, 10, 11)
    injection_layers: Tuple[str, ...] = ("spatial_self", "spatial_cross")
    #: latent blending after steps [start, end] inclusive (SD: t_m and t_m + 1)
    blend_steps: Tuple[int, int] = (22, 23)
    #: frames per VAE encode / decode call.  The SD VAE treats frames independently,
    #: so this bounds memory without changing the maths (the authors decode all 14
    #: at once: None); the posterior noise is drawn for the whole batch first.
    decode_chunk: int | None = 4


@dataclass(frozen=True)
class SVDConfig(BackboneConfig):
    """Stable Video Diffusion img2vid, 14 frames (docs/design/authors_code.md#effective-settings, column "svd")."""

    modulation_step: int = 17          # sigma = 1.273
    sigma_min: float = 0.002
    sigma_max: float = 700.0
    rho: float = 7.0
    #: LinearPredictionGuider: guidance scale linear per frame from min to max
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 2.5
    #: conditioning (the authors' function defaults: fps_id 14, not the usual 6)
    fps_id: int = 14
    motion_bucket_id: int = 127
    cond_aug: float = 0.02
    modulation_block: int = 8
    modulation_layers: Tuple[str, ...] = ("spatial_self", "temporal_self")
    injection_blocks: Tuple[int, ...] = (3, 4, 5, 6, 7, 8, 9, 10, 11)
    injection_layers: Tuple[str, ...] = ("temporal_self",)
    #: SVD blends after every step from t_m through the last one
    blend_steps: Tuple[int, int] = (17, 24)
    #: the authors decode one frame at a time (temporal decoder sees 1 frame)
    decode_chunk: int | None = 1
