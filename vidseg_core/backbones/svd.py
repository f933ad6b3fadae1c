"""Stable Video Diffusion (img2vid, 14 frames) backbone: the authors' SVD sampler on diffusers modules.

What the authors' sgm code does (docs/design/authors_code.md#effective-settings, #schedule-and-noise-levels; ``svd.yaml``) and
how it is re-expressed here:

* **Schedule** — ``EDMDiscretization(σ_min=0.002, σ_max=700, ρ=7)``, 25 steps
  plus a final 0: ``σ_i = (σ_max^(1/ρ) + i/24·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ``
  (step 17 → 1.273, 22 → 0.0248, 24 → 0.002).
* **Denoiser** — ``Denoiser`` + ``VScalingWithEDMcNoise``: ``c_skip = 1/(σ²+1)``,
  ``c_out = −σ/√(σ²+1)``, ``c_in = 1/√(σ²+1)``, ``c_noise = ¼·ln σ``;
  ``D = c_skip·x + c_out·UNet(concat[c_in·x, cond_latent], c_noise, …)`` (the
  concat conditioning is appended *after* the ``c_in`` scaling, as sgm's
  ``OpenAIWrapper`` does).
* **Conditioning** from the FIRST frame of each batch:
  ``cond_frames_without_noise`` → OpenCLIP ViT-H image embedding
  (``CLIPVisionModelWithProjection.image_embeds``) after the CLIP preprocessing
  (the whole frame squashed to 224x224 with kornia's antialiased bicubic, as the
  authors do: :mod:`.clip_resize`; then ``(x+1)/2``, CLIP mean/std);
  ``cond_frames = img + 0.02·N(0,1)`` → VAE-encoded and concatenated to the
  latent of every frame; added time ids ``[fps_id=14, motion_bucket_id=127,
  cond_aug=0.02]`` passed to the UNet as they are (diffusers' pipeline
  subtracts 1 from its user-facing fps; the authors feed ``fps_id`` directly).
  The unconditional half zeroes BOTH image conditions (``force_uc_zero_embeddings
  = [cond_frames, cond_frames_without_noise]``); the time ids are shared.
  ``image_only_indicator`` is all zeros (diffusers' UNet builds it so).
* **The conditioning latent is the posterior MODE and is NOT multiplied by the
  scaling factor.**  sgm: the ``cond_frames`` embedder is
  ``VideoPredictionEmbedderWithEncoder`` whose ``scale_factor`` defaults to 1.0
  and is not set in ``svd.yaml``, with an ``AutoencoderKLModeOnly`` encoder
  (``DiagonalGaussianRegularizer(sample=False)``); diffusers'
  ``StableVideoDiffusionPipeline`` likewise uses ``vae.encode(image).latent_dist.mode()``
  without scaling.  (Frame latents, by contrast, are posterior samples × 0.18215.)
* **Guidance** — ``LinearPredictionGuider(min_scale=1.0, max_scale=2.5)``:
  per-frame scale ``s_f = linspace(1.0, 2.5, T)``, ``D = D_u + s_f·(D_c − D_u)``.
* **VAE** — encode: posterior sample (noise from a CPU generator) × 0.18215;
  decode: ``AutoencoderKLTemporalDecoder.decode(z/0.18215, num_frames=chunk)`` in
  chunks of ``config.decode_chunk`` frames (1 = the authors' one frame at a time,
  so the temporal decoder sees one frame), ``(x+1)/2`` clamped, float32.

UNet batches are ``(R·2, T, 8, h, w)`` in ``[run, half]`` order, so the spatial
attention rows are ``[run, half, frame]`` and the temporal rows ``[run, half,
token]`` (:class:`~.attention.RowLayout`).

Loading is offline only (:mod:`.svd_files`).  Single files (``svd.safetensors``, ``svd_xt.safetensors``
in the original sgm layout) go through this pack's own conversion
(:mod:`.svd_convert`) into models built from the configs shipped in
``configs/svd`` (or the tiny test configs, whichever the file's tensor shapes
match); diffusers folders through per-component
``from_pretrained(..., local_files_only=True)``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..errors import InputError, ModelLoadError
from .attention import LayerId
from .base import Backbone, cast_module
from .clip_resize import resize_antialiased_bicubic
from .config import SVDConfig

#: the shipped real SVD configs (diffusers layout: unet/, vae/, image_encoder/)
CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "svd"
#: OpenCLIP / CLIP image normalisation (the authors' FrozenOpenCLIPImageEmbedder)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PARTS = ("unet", "vae", "image_encoder")

# ------------------------------------------------------------------ tiny configs (docs/design/backbones.md#tiny-test-models)
TINY_UNET = dict(
    sample_size=32, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    block_out_channels=(32, 64, 64, 64), addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
    layers_per_block=2, cross_attention_dim=32, transformer_layers_per_block=1, num_attention_heads=(2, 4, 4, 4),
    num_frames=14,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, block_out_channels=(32, 32, 64, 64),
    layers_per_block=2, latent_channels=4, sample_size=64, scaling_factor=0.18215, force_upcast=True,
)
TINY_IMAGE_ENCODER = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=224, patch_size=14,
    projection_dim=32, hidden_act="gelu", num_channels=3, layer_norm_eps=1e-5,
)


# ------------------------------------------------------------------ schedule (docs/design/authors_code.md#schedule-and-noise-levels)
def edm_sigmas(config: SVDConfig) -> torch.Tensor:
    """``EDMDiscretization``: ``num_steps`` σ's from σ_max down to σ_min (ρ-spaced), then 0; float64."""
    n = int(config.num_steps)
    if n < 2:
        raise InputError(f"num_steps must be at least 2; got {n}.", "Use the authors' 25.")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = config.sigma_min ** (1 / config.rho), config.sigma_max ** (1 / config.rho)
    sig = (hi + ramp * (lo - hi)) ** config.rho
    return torch.cat([sig, sig.new_zeros(1)])


def clip_preprocess(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """``[N,3,H,W]`` in -1..1 -> CLIP pixel values, as the authors' ``FrozenOpenCLIPImageEmbedder.preprocess``.

    The whole frame is squashed (no crop) to ``size``² with kornia's antialiased
    bicubic (Gaussian pre-blur when shrinking, then bicubic with
    ``align_corners=True``; :mod:`.clip_resize`), mapped to 0..1 and normalised
    with the CLIP mean/std.  Computed in float32 (float64 stays float64).
    """
    if not torch.is_tensor(image) or image.ndim != 4 or image.shape[1] != 3:
        got = getattr(image, "shape", type(image))
        raise InputError(f"clip_preprocess expects images [N,3,H,W] in -1..1; got {got}.",
                         "Pass an RGB image batch, channels first.")
    x = resize_antialiased_bicubic(image, (size, size))
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def check_latents(x, cond) -> tuple:
    """``(R, T, C, h, w)`` of latents ``[R,T,4,h,w]`` that fit an SVD conditioning, or a readable error."""
    if not torch.is_tensor(x) or x.ndim != 5 or x.shape[2] != cond.concat_latent.shape[1]:
        raise InputError(f"denoised expects latents [R,T,4,h,w]; got {getattr(x, 'shape', type(x))}.",
                         "Add the run dimension.")
    r, t, c, h, w = x.shape
    if t != cond.frames or (h, w) != tuple(cond.concat_latent.shape[-2:]):
        raise InputError(f"Latents [R,{t},{c},{h},{w}] do not match the conditioning (T={cond.frames}, "
                         f"latent {tuple(cond.concat_latent.shape[-2:])}).",
                         "Build the conditioning from the same prepared frames as the latents.")
    return r, t, c, h, w


@dataclass
class SVDCondition:
    """Both guidance halves of one ``T``-frame batch (row 0 = unconditional = zeros, row 1 = conditional)."""

    image_embeds: torch.Tensor    # [2, 1, D]  CLIP image embedding
    concat_latent: torch.Tensor   # [2, 4, h, w]  unscaled posterior mode of the noised first frame
    added_time_ids: torch.Tensor  # [2, 3]  fps_id, motion_bucket_id, cond_aug (float32)
    guidance: torch.Tensor        # [T]  per-frame guidance scale, float32

    @property
    def frames(self) -> int:
        return int(self.guidance.shape[0])


class ConditioningEncoder(torch.nn.Module):
    """The conditioning image encoder of original files whose ``conditioner.embedders.3`` differs from the VAE's.

    ``forward`` returns the posterior moments ``quant_conv(encoder(x))``.
    """

    def __init__(self, encoder: torch.nn.Module, quant_conv: torch.nn.Module):
        super().__init__()
        self.encoder = encoder
        self.quant_conv = quant_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))


class SVDBackbone(Backbone):
    """Stable Video Diffusion img2vid with the authors' sampler settings (see module doc)."""

    family = "svd"

    def __init__(self, name: str, config: SVDConfig, unet, vae, image_encoder, device: torch.device,
                 dtype: torch.dtype, cond_encoder: Optional[ConditioningEncoder] = None):
        if not isinstance(config, SVDConfig):
            raise InputError(f"SVD needs an SVDConfig; got {type(config).__name__}.", "Pass SVDConfig(...) or None.")
        super().__init__(name, config, unet, vae, torch.device(device), dtype)
        self.image_encoder = image_encoder
        self.cond_encoder = cond_encoder
        self._sigmas: Optional[torch.Tensor] = None
        self._keep_vae_fp32()

    # ------------------------------------------------------------ housekeeping
    def modules(self) -> Dict[str, torch.nn.Module]:
        mods = {"unet": self.unet, "vae": self.vae, "image_encoder": self.image_encoder}
        if self.cond_encoder is not None:
            mods["cond_encoder"] = self.cond_encoder
        return mods

    def _keep_vae_fp32(self) -> None:
        # the SVD VAE config says force_upcast: fp16 is not used for it (bf16 / fp32 are kept)
        super()._keep_vae_fp32()
        if self.dtype == torch.float16:
            if self.cond_encoder is not None:
                self.cond_encoder.to(dtype=torch.float32)

    # ------------------------------------------------------------ schedule
    def sigmas(self) -> torch.Tensor:
        if self._sigmas is None:
            self._sigmas = edm_sigmas(self.config)
        return self._sigmas

    # ------------------------------------------------------------ VAE
    #: the temporal VAE decoder mixes the frames of a clip (decode_chunk frames, 1 = the authors' setting)
    vae_frames_independent = False

    def _vae_decode(self, z: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """The temporal VAE decoder needs its frame count: ``z`` holds clips of ``clip_frames`` frames."""
        return self.vae.decode(z, num_frames=clip_frames).sample

    # ------------------------------------------------------------ conditioning
    def image_embedding(self, image: torch.Tensor) -> torch.Tensor:
        """CLIP image embedding ``[N, D]`` of images ``[N,3,H,W]`` in -1..1 (``cond_frames_without_noise``)."""
        enc = self.image_encoder
        size = int(getattr(enc.config, "image_size", 224))
        pixels = clip_preprocess(image.to(self.device), size).to(next(enc.parameters()).dtype)
        with torch.no_grad():
            return enc(pixel_values=pixels).image_embeds

    def condition_latent(self, image: torch.Tensor) -> torch.Tensor:
        """Unscaled posterior MODE ``[N,4,h,w]`` of ``cond_frames`` (see the module doc for why)."""
        with torch.no_grad():
            if self.cond_encoder is not None:
                cdt = next(self.cond_encoder.parameters()).dtype
                moments = self.cond_encoder(image.to(self.device, cdt))
                return moments.chunk(2, dim=1)[0]
            return self.vae.encode(image.to(self.device, self._vae_dtype())).latent_dist.mode()

    def condition(self, frames: torch.Tensor, generator: torch.Generator) -> SVDCondition:
        """Conditioning of one batch from its FIRST frame: CLIP embedding, noised-frame latent, time ids."""
        t, _, _ = self._check_frames(frames, "condition")
        cfg = self.config
        first = frames[:1].to(self.device, torch.float32)
        noise = self.randn(tuple(first.shape), generator).float()
        cond_frames = first + cfg.cond_aug * noise
        latent = self.condition_latent(cond_frames).to(self.dtype)
        embeds = self.image_embedding(first).to(self.dtype)[:, None]  # [1, 1, D]
        ids = torch.tensor([[cfg.fps_id, cfg.motion_bucket_id, cfg.cond_aug]], dtype=torch.float32, device=self.device)
        guidance = torch.linspace(cfg.min_guidance_scale, cfg.max_guidance_scale, t, dtype=torch.float32)
        return SVDCondition(image_embeds=torch.cat([torch.zeros_like(embeds), embeds]),
                            concat_latent=torch.cat([torch.zeros_like(latent), latent]),
                            added_time_ids=ids.expand(2, 3).clone(), guidance=guidance.to(self.device))

    # ------------------------------------------------------------ denoiser
    def denoised(self, x: torch.Tensor, step: int, cond: SVDCondition,
                 conditional_only: bool = False) -> torch.Tensor:
        """One guided UNet call on ``R`` runs sharing ``cond`` (rows ``[run, half, frame]``, per-frame CFG).

        ``conditional_only``: the conditional rows ``[run, frame]`` alone, unguided D.
        """
        self._check_denoise_args(step, cond, SVDCondition)
        r, t, c, h, w = check_latents(x, cond)
        sigma = self.sigma_values()[step]
        c_skip = 1.0 / (sigma ** 2 + 1.0)
        c_out = -sigma / math.sqrt(sigma ** 2 + 1.0)
        c_in = 1.0 / math.sqrt(sigma ** 2 + 1.0)
        c_noise = 0.25 * math.log(sigma)

        halves = 1 if conditional_only else 2
        first = 2 - halves  # the conditional half is index 1 of every conditioning tensor
        xs = x.to(self.device, self.dtype)
        noisy = (xs * c_in).unsqueeze(1).expand(r, halves, t, c, h, w)
        lat = cond.concat_latent.to(self.device, self.dtype)[first:]
        concat = lat.view(1, halves, 1, *lat.shape[1:]).expand(r, halves, t, *lat.shape[1:])
        sample = torch.cat([noisy, concat], dim=3).reshape(r * halves, t, c + lat.shape[1], h, w)
        emb = cond.image_embeds.to(self.device, self.dtype)[first:]
        emb = emb.unsqueeze(0).expand(r, *emb.shape).reshape(r * halves, *emb.shape[1:])
        # time ids and c_noise stay float32: diffusers embeds them sinusoidally, then casts to the model dtype
        ids = cond.added_time_ids.to(self.device, torch.float32)[first:]
        ids = ids.unsqueeze(0).expand(r, halves, -1).reshape(r * halves, -1)
        timestep = torch.tensor(c_noise, device=self.device, dtype=torch.float32)

        self._prepare_controller(int(step), r, t, (h, w), halves)
        with torch.no_grad():
            out = self.unet(sample, timestep, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)[0]
        out = out.float().view(r, halves, t, c, h, w)
        d = c_skip * xs.float().unsqueeze(1) + c_out * out
        if conditional_only:
            return d[:, 0].to(x.dtype)
        scale = cond.guidance.to(d.device, torch.float32).view(1, t, 1, 1, 1)
        d = d[:, 0] + scale * (d[:, 1] - d[:, 0])
        return d.to(x.dtype)

    # ------------------------------------------------------------ hooks
    def attention_layers(self) -> Dict[LayerId, torch.nn.Module]:
        """LDM output blocks 3..11 -> ``up_blocks[b//3].attentions[b%3]``: spatial ``transformer_blocks[0]``,
        temporal ``temporal_transformer_blocks[0]`` (sgm ``time_stack[0]``), ``attn1`` / ``attn2``."""
        layers: Dict[LayerId, torch.nn.Module] = {}
        for b in range(3, 12):
            att = self.unet.up_blocks[b // 3].attentions[b % 3]
            spatial, temporal = att.transformer_blocks[0], att.temporal_transformer_blocks[0]
            layers[LayerId(b, "spatial_self")] = spatial.attn1
            layers[LayerId(b, "spatial_cross")] = spatial.attn2
            layers[LayerId(b, "temporal_self")] = temporal.attn1
            layers[LayerId(b, "temporal_cross")] = temporal.attn2
        return layers


# ------------------------------------------------------------------ building
def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read the model config {path} ({exc}).",
                             "Reinstall the node pack (its configs/svd folder is incomplete).") from exc


def real_configs(num_frames: int = 14) -> Tuple[dict, dict, dict]:
    """The shipped SVD configs (UNet, VAE, image encoder); ``num_frames`` 25 for svd_xt."""
    unet = _read_json(CONFIG_DIR / "unet" / "config.json")
    unet["num_frames"] = int(num_frames)
    return unet, _read_json(CONFIG_DIR / "vae" / "config.json"), _read_json(CONFIG_DIR / "image_encoder" / "config.json")


def _clean(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _build(part: str, cfg: dict, meta: bool = False) -> torch.nn.Module:
    """Random-init (or meta-device) ``unet`` / ``vae`` / ``image_encoder`` from a config dict."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta") if meta else contextlib.nullcontext():
        if part == "unet":
            return UNetSpatioTemporalConditionModel.from_config(_clean(cfg))
        if part == "vae":
            return AutoencoderKLTemporalDecoder.from_config(_clean(cfg))
        clip_cfg = {k: v for k, v in _clean(cfg).items() if k != "architectures"}
        return CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(clip_cfg))


def _build_parts(unet_cfg: dict, vae_cfg: dict, clip_cfg: dict, meta: bool = False):
    return _build("unet", unet_cfg, meta), _build("vae", vae_cfg, meta), _build("image_encoder", clip_cfg, meta)


def _finish(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    module.to(device=device)
    if any(p.dtype != dtype for p in module.parameters()):
        cast_module(module, dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def build_tiny_svd(device="cpu", dtype=torch.float32, config: Optional[SVDConfig] = None, seed: int = 0) -> SVDBackbone:
    """A randomly initialised SVD with the real block layout (docs/design/backbones.md#tiny-test-models), from a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, vae, enc = _build_parts(TINY_UNET, TINY_VAE, TINY_IMAGE_ENCODER)
    device = torch.device(device)
    return SVDBackbone("tiny-svd", config or SVDConfig(), _finish(unet, device, dtype), _finish(vae, device, dtype),
                       _finish(enc, device, dtype), device, dtype)
