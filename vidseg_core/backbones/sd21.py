"""Stable Diffusion 2.1 backbone: the authors' SD sampler on diffusers modules.

What the authors' sgm code does (docs/design/authors_code.md#effective-settings, #schedule-and-noise-levels) and how it is
re-expressed here:

* **Schedule** — ``LegacyDDPMDiscretization``: ``β = linspace(√0.00085, √0.012,
  1000)²``, ``ᾱ = cumprod(1 − β)``; 25 steps at DDPM ``t_i = ⌊999 − i·999/25⌋``
  (999, 959, …, 79, 39), ``σ_t = √((1 − ᾱ_t)/ᾱ_t)``, descending, plus a final 0.
* **Denoiser** — ``DiscreteDenoiser`` + ``EpsScaling`` (512-base) or
  ``VScaling`` (768-v): the UNet sees ``x·c_in`` with ``c_in = 1/√(σ²+1)`` and
  the discrete timestep ``t`` of ``σ``;
  eps: ``D = x − σ·ε``;  v: ``D = x/(σ²+1) − σ/√(σ²+1)·v``.
* **Guidance** — ``VanillaCFG(scale=5)`` on ``D``: ``D = D_u + 5·(D_c − D_u)``;
  cond = the text embedding of the empty prompt, uncond = a zeroed embedding
  (``force_uc_zero_embeddings``).
* **Text** — the empty prompt is embedded once at load time by the
  checkpoint's own OpenCLIP-H text tower minus its last layer ("penultimate"),
  from the fixed ids ``[49406, 49407] + 75 × 0`` (OpenCLIP's ``tokenize("")``),
  so no tokenizer is needed; the text encoder is then dropped.
* **VAE** — encode draws a posterior *sample* (noise from a CPU generator) and
  multiplies by 0.18215; decode divides, maps ``(x+1)/2`` and clamps to 0..1.

Loading is offline only (docs/design/backbones.md#offline-loading-of-sd-21-single-files), in :mod:`.sd21_files`: single files
through model-level ``from_single_file`` with the config folder shipped in
``configs/sd21``, the text tower through its own OpenCLIP → ``CLIPTextModel``
key conversion; diffusers folders through per-component ``from_pretrained``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ..errors import InputError
from .attention import LayerId
from .base import Backbone
from .config import SD21Config

#: the shipped real SD 2.1 configs (diffusers layout: unet/, vae/, text_encoder/)
CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "sd21"

#: OpenCLIP ``tokenize("")``: start, end, then zero padding to 77 (docs/design/backbones.md#the-empty-prompt-embedding-without-a-tokenizer)
EMPTY_PROMPT_IDS: Tuple[int, ...] = (49406, 49407) + (0,) * 75

PREDICTION_TYPES = ("epsilon", "v_prediction")
_PREDICTION_ALIASES = {"eps": "epsilon", "epsilon": "epsilon", "v": "v_prediction", "v_prediction": "v_prediction",
                       "v-prediction": "v_prediction", "vpred": "v_prediction", "v_pred": "v_prediction"}

#: prefixes of the original (LDM) single-file layout
LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."
LDM_TEXT_PREFIX = "cond_stage_model.model."

# ------------------------------------------------------------------ tiny configs (docs/design/backbones.md#tiny-test-models, tiny column)
TINY_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, only_cross_attention=False,
    block_out_channels=(32, 64, 64, 64), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=32, attention_head_dim=(2, 4, 4, 4),
    use_linear_projection=True, upcast_attention=False,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 64, 64), layers_per_block=2,
    act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=64, scaling_factor=0.18215,
)
#: vocab kept at 49408 so the real ids 49406 / 49407 / 0 stay valid
TINY_TEXT = dict(
    vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
    max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=32,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
#: what the 768-v repo's UNet config changes (docs/design/backbones.md#512-base-or-768-v)
V_MODEL_UNET_OVERRIDES = dict(sample_size=96, upcast_attention=True)


# ------------------------------------------------------------------ schedule (docs/design/authors_code.md#schedule-and-noise-levels)
def ddpm_alphas_cumprod(config: SD21Config) -> torch.Tensor:
    """``ᾱ_t`` of the LegacyDDPMDiscretization, float64 ``[num_train_timesteps]``."""
    n = config.num_train_timesteps
    betas = torch.linspace(config.beta_start ** 0.5, config.beta_end ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def step_timesteps(config: SD21Config) -> List[int]:
    """DDPM timestep of each sampler step, noisiest first: 999, 959, ..., 79, 39 for 25 of 1000."""
    n, steps = config.num_train_timesteps, config.num_steps
    if not 1 <= steps <= n:
        raise InputError(f"num_steps must be between 1 and {n}; got {steps}.", "Use the authors' 25 steps.")
    # roughly equally spaced, truncated like the authors' integer cast of linspace(n-1, 0, steps, endpoint=False)
    return [int((n - 1) - i * (n - 1) / steps) for i in range(steps)]


def schedule_sigmas(config: SD21Config) -> torch.Tensor:
    """``σ`` of each step (descending) plus a final 0: float64 ``[num_steps + 1]``."""
    acp = ddpm_alphas_cumprod(config)
    t = torch.tensor(step_timesteps(config), dtype=torch.long)
    sig = ((1.0 - acp[t]) / acp[t]).sqrt()
    return torch.cat([sig, sig.new_zeros(1)])


# ------------------------------------------------------------------ prediction type
def normalize_prediction_type(value: Optional[str]) -> Optional[str]:
    """``None`` / ``"auto"`` -> ``None``; aliases -> ``"epsilon"`` / ``"v_prediction"``."""
    if value is None:
        return None
    key = str(value).strip().lower()
    if key in ("", "auto"):
        return None
    if key not in _PREDICTION_ALIASES:
        raise InputError(f"Unknown prediction type {value!r}.",
                         "Use 'auto', 'epsilon' (v2-1_512-ema-pruned) or 'v_prediction' (v2-1_768-ema-pruned).")
    return _PREDICTION_ALIASES[key]


def prediction_type_from_name(name: str) -> str:
    """Guess the prediction type from a file / folder name (docs/design/backbones.md#512-base-or-768-v).

    Nothing inside an SD 2.x file tells 512-base (epsilon) from 768-v
    (v-prediction).  Names with ``768`` or a ``-v`` / ``_v`` token (``768-v-ema``,
    ``sd21-v``, ``v-pred``) mean v-prediction; everything else epsilon.  The
    ``v2-1`` version tag is not a ``-v`` token.
    """
    stem = Path(str(name)).name.lower()
    for ext in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    if "768" in stem or re.search(r"(^|[-_.\s])v([-_.\s]|pred|$)", stem):
        return "v_prediction"
    return "epsilon"


def _config_with(config: Optional[SD21Config], prediction_type: str) -> SD21Config:
    cfg = config if config is not None else SD21Config()
    if not isinstance(cfg, SD21Config):
        raise InputError(f"config must be an SD21Config; got {type(cfg).__name__}.", "Pass SD21Config(...) or None.")
    return cfg.with_(prediction_type=prediction_type)


# ------------------------------------------------------------------ the backbone
@dataclass
class SD21Condition:
    """Both guidance halves of one batch: ``context[0]`` = zeros (uncond), ``context[1]`` = ``""`` (cond)."""

    context: torch.Tensor  # [2, 77, C]


class SD21Backbone(Backbone):
    """Stable Diffusion 2.1 (512-base eps or 768-v) with the authors' sampler settings."""

    family = "sd"
    #: builds the checkpoint's own text tower again on demand, ``() -> CLIPTextModel`` (float32, CPU), for
    #: naming regions (:mod:`vidseg_core.naming`); None where the loader cannot (set by the loaders)
    text_encoder_loader: Optional[Callable[[], Any]] = None
    #: folder of the checkpoint's own tokenizer (``vocab.json`` + ``merges.txt``), where it ships one
    tokenizer_dir: Optional[Path] = None
    #: ``phrase -> token ids`` used instead of a tokenizer folder (the tiny test model's :func:`tiny_word_ids`)
    word_ids: Optional[Callable[[str], List[int]]] = None

    def __init__(self, name: str, config: SD21Config, unet, vae, device: torch.device, dtype: torch.dtype,
                 empty_embedding: torch.Tensor):
        if config.prediction_type not in PREDICTION_TYPES:
            raise InputError(f"Unknown prediction type {config.prediction_type!r}.",
                             "Use 'epsilon' or 'v_prediction'.")
        super().__init__(name, config, unet, vae, torch.device(device), dtype)
        #: ``last_hidden_state`` of the empty prompt, ``[1, 77, C]`` float32 on the CPU
        self.empty_embedding = empty_embedding.detach().to("cpu", torch.float32).clone()
        self._sigmas: Optional[torch.Tensor] = None
        self._timesteps: Optional[List[int]] = None
        self._keep_vae_fp32()

    # ------------------------------------------------------------ schedule
    def sigmas(self) -> torch.Tensor:
        if self._sigmas is None:
            self._sigmas = schedule_sigmas(self.config)
            self._timesteps = step_timesteps(self.config)
        return self._sigmas

    def timesteps(self) -> List[int]:
        """DDPM timestep the UNet sees at each step (the σ's discrete index)."""
        self.sigmas()
        return list(self._timesteps)

    # ------------------------------------------------------------ conditioning + denoiser
    def condition(self, frames: torch.Tensor, generator: torch.Generator) -> SD21Condition:
        """The same for every batch: uncond = zeros, cond = the empty-prompt embedding (frames are not used)."""
        e = self.empty_embedding.to(self.device, self.dtype)
        return SD21Condition(torch.cat([torch.zeros_like(e), e]))

    def denoised(self, x: torch.Tensor, step: int, cond: SD21Condition,
                 conditional_only: bool = False) -> torch.Tensor:
        """One guided UNet call on ``R`` runs: rows ``[run, half, frame]``, CFG per run (see module doc).

        ``conditional_only``: the conditional rows ``[run, frame]`` alone, unguided D.
        """
        self._check_denoise_args(step, cond, SD21Condition)
        if not torch.is_tensor(x) or x.ndim != 5 or x.shape[2] != 4:
            raise InputError(f"denoised expects latents [R,T,4,h,w]; got {getattr(x, 'shape', type(x))}.",
                             "Add the run dimension.")
        r, t, c, h, w = x.shape
        sigma = self.sigma_values()[step]
        timestep = torch.tensor(self._timesteps[step], device=self.device, dtype=torch.long)
        c_in = 1.0 / math.sqrt(sigma ** 2 + 1.0)

        halves = 1 if conditional_only else 2
        xs = x.to(self.device, self.dtype)
        rows = xs.unsqueeze(1).expand(r, halves, t, c, h, w).reshape(r * halves * t, c, h, w)
        ctx = cond.context.to(self.device, self.dtype)[2 - halves:]
        n_tok, dim = ctx.shape[-2:]
        ctx_rows = ctx.view(1, halves, 1, n_tok, dim).expand(r, halves, t, n_tok, dim).reshape(r * halves * t, n_tok, dim)

        self._prepare_controller(int(step), r, t, (h, w), halves)
        with torch.no_grad():
            out = self.unet(rows * c_in, timestep, encoder_hidden_states=ctx_rows, return_dict=False)[0]
        out = out.float().view(r, halves, t, c, h, w)
        x32 = xs.float().unsqueeze(1)
        if self.config.prediction_type == "v_prediction":
            d = x32 / (sigma ** 2 + 1.0) - (sigma / math.sqrt(sigma ** 2 + 1.0)) * out
        else:
            d = x32 - sigma * out
        if conditional_only:
            return d[:, 0].to(x.dtype)
        d = d[:, 0] + self.config.guidance_scale * (d[:, 1] - d[:, 0])
        return d.to(x.dtype)

    # ------------------------------------------------------------ hooks
    def attention_layers(self) -> Dict[LayerId, torch.nn.Module]:
        """LDM output blocks 3..11 -> ``up_blocks[b//3].attentions[b%3].transformer_blocks[0].attn1/attn2``."""
        layers: Dict[LayerId, torch.nn.Module] = {}
        for b in range(3, 12):
            block = self.unet.up_blocks[b // 3].attentions[b % 3].transformer_blocks[0]
            layers[LayerId(b, "spatial_self")] = block.attn1
            layers[LayerId(b, "spatial_cross")] = block.attn2
        return layers


# ------------------------------------------------------------------ text tower
def empty_prompt_embedding(text_encoder) -> torch.Tensor:
    """``last_hidden_state`` of the fixed empty-prompt ids: ``[1, 77, C]`` float32 on the CPU."""
    param = next(text_encoder.parameters())
    ids = torch.tensor([EMPTY_PROMPT_IDS], dtype=torch.long, device=param.device)
    with torch.no_grad():
        out = text_encoder(input_ids=ids).last_hidden_state
    return out.detach().to("cpu", torch.float32)


# ------------------------------------------------------------------ tiny model
def build_tiny_sd_parts(seed: int = 0):
    """Random tiny ``(unet, vae, text_encoder)`` with the real block layout (docs/design/backbones.md#tiny-test-models), fp32 on the CPU.

    The global RNG is left untouched (``fork_rng``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TINY_UNET)
        vae = AutoencoderKL(**TINY_VAE)
        te = CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    return unet.eval(), vae.eval(), te.eval()


def tiny_word_ids(phrase: str) -> List[int]:
    """Token ids of the tiny test model: one id per whitespace-separated word, from a CRC-32 of the lower-cased
    word (1..49000: never the start / end ids).  The tiny text tower is random, so any fixed map serves."""
    import zlib

    return [1 + zlib.crc32(w.encode("utf-8")) % 49000 for w in str(phrase).lower().split()]


def build_tiny_sd(device="cpu", dtype=torch.float32, config: Optional[SD21Config] = None,
                  seed: int = 0) -> SD21Backbone:
    """The tiny SD 2.1 twin ("tiny-sd") for tests: random from ``seed``, nothing downloaded."""
    unet, vae, te = build_tiny_sd_parts(seed)
    cfg = config if config is not None else SD21Config()
    emb = empty_prompt_embedding(te)
    backbone = SD21Backbone("tiny-sd", _config_with(cfg, cfg.prediction_type), unet, vae, torch.device("cpu"),
                      torch.float32, emb).to(device, dtype)
    backbone.text_encoder_loader = lambda: te  # tiny: kept (a few hundred kB)
    backbone.word_ids = tiny_word_ids
    return backbone
