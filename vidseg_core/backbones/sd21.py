"""Stable Diffusion 2.1 backbone: the authors' SD sampler on diffusers modules.

What the authors' sgm code does (reference notes §2.1, §2.2) and how it is
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

Loading is offline only (stack notes §5): single files through model-level
``from_single_file`` with the config folder shipped in
``configs/sd21`` (``local_files_only=True``), the text tower through this
module's own OpenCLIP → ``CLIPTextModel`` key conversion; diffusers folders
through per-component ``from_pretrained(..., local_files_only=True)``.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from ..errors import InputError, ModelLoadError
from .attention import LayerId
from .base import Backbone
from .config import SD21Config

#: the shipped real SD 2.1 configs (diffusers layout: unet/, vae/, text_encoder/)
CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "sd21"

#: OpenCLIP ``tokenize("")``: start, end, then zero padding to 77 (stack notes §5.4)
EMPTY_PROMPT_IDS: Tuple[int, ...] = (49406, 49407) + (0,) * 75

PREDICTION_TYPES = ("epsilon", "v_prediction")
_PREDICTION_ALIASES = {"eps": "epsilon", "epsilon": "epsilon", "v": "v_prediction", "v_prediction": "v_prediction",
                       "v-prediction": "v_prediction", "vpred": "v_prediction", "v_pred": "v_prediction"}

#: prefixes of the original (LDM) single-file layout
LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."
LDM_TEXT_PREFIX = "cond_stage_model.model."

# ------------------------------------------------------------------ tiny configs (stack notes §7.1, tiny column)
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
#: what the 768-v repo's UNet config changes (stack notes §5.3)
V_MODEL_UNET_OVERRIDES = dict(sample_size=96, upcast_attention=True)


# ------------------------------------------------------------------ schedule (reference §2.2)
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
    """Guess the prediction type from a file / folder name (stack notes §5.3).

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
        sig = self._check_denoise_args(step, cond, SD21Condition)
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


def _text_prefix(text_encoder) -> str:
    """``"text_model."`` before transformers 5.6, ``""`` for the flattened ``CLIPTextModel``."""
    return "text_model." if hasattr(text_encoder, "text_model") else ""


def open_clip_text_to_clip(state: Dict[str, torch.Tensor], num_layers: int, prefix: str = "",
                           source_prefix: str = LDM_TEXT_PREFIX) -> Dict[str, torch.Tensor]:
    """OpenCLIP text tower (``cond_stage_model.model.*``) -> ``CLIPTextModel`` state dict.

    Keeps resblocks ``0..num_layers-1`` (23 of 24 for SD 2.x: the "penultimate"
    layer), splits each fused ``attn.in_proj`` into q / k / v, and drops what
    the last hidden state does not use (``text_projection``, ``logit_scale``,
    ``attn_mask``, the last resblock).  ``prefix`` is ``"text_model."`` for the
    pre-5.6 transformers layout.
    """
    def get(key):
        full = source_prefix + key
        if full not in state:
            raise ModelLoadError(f"The checkpoint's text encoder is incomplete: {full} is missing.",
                                 "Use a complete SD 2.1 checkpoint (v2-1_512-ema-pruned / v2-1_768-ema-pruned).")
        return state[full]

    out = {
        f"{prefix}embeddings.token_embedding.weight": get("token_embedding.weight"),
        f"{prefix}embeddings.position_embedding.weight": get("positional_embedding"),
        f"{prefix}final_layer_norm.weight": get("ln_final.weight"),
        f"{prefix}final_layer_norm.bias": get("ln_final.bias"),
    }
    pairs = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i in range(num_layers):
        src, dst = f"transformer.resblocks.{i}.", f"{prefix}encoder.layers.{i}."
        for a, b in pairs.items():
            for p in ("weight", "bias"):
                out[f"{dst}{b}.{p}"] = get(f"{src}{a}.{p}")
        for p in ("weight", "bias"):
            fused = get(f"{src}attn.in_proj_{p}")
            if fused.shape[0] % 3:
                raise ModelLoadError(f"{source_prefix}{src}attn.in_proj_{p} has shape {tuple(fused.shape)}, "
                                     "not three stacked q/k/v projections.", "Use a genuine SD 2.1 checkpoint.")
            q, k, v = fused.chunk(3, dim=0)
            out[f"{dst}self_attn.q_proj.{p}"] = q
            out[f"{dst}self_attn.k_proj.{p}"] = k
            out[f"{dst}self_attn.v_proj.{p}"] = v
    return out


def _count_resblocks(state, source_prefix: str = LDM_TEXT_PREFIX) -> int:
    pat = re.compile(re.escape(source_prefix) + r"transformer\.resblocks\.(\d+)\.")
    idx = {int(m.group(1)) for k in state for m in [pat.match(k)] if m}
    return max(idx) + 1 if idx else 0


def _text_encoder_from_state(text_config, converted_unprefixed: Dict[str, torch.Tensor]):
    """Build a ``CLIPTextModel`` holding exactly ``converted`` (meta init: no random weights are drawn)."""
    from transformers import CLIPTextModel

    with torch.device("meta"):
        te = CLIPTextModel(text_config)
    prefix = _text_prefix(te)
    sd = {prefix + k: v.to(torch.float32) for k, v in converted_unprefixed.items()}
    expected = set(te.state_dict().keys())
    missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or extra:
        raise ModelLoadError(f"The text encoder weights do not fit CLIPTextModel (missing {missing[:3]}, "
                             f"unexpected {extra[:3]}).", "Use a genuine SD 2.1 checkpoint.")
    try:
        te.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatch
        raise ModelLoadError(f"The text encoder weights have unexpected shapes: {exc}",
                             "Use a genuine SD 2.1 checkpoint.") from exc
    # non-persistent buffers are not in the state dict: re-create them
    for name, buf in list(te.named_buffers()):
        if buf.is_meta:
            if not name.endswith("position_ids"):  # unknown transformers internals: fall back to a plain build
                te = CLIPTextModel(text_config)
                te.load_state_dict(sd, strict=True)
                break
            owner = te.get_submodule(name.rsplit(".", 1)[0]) if "." in name else te
            owner.register_buffer(name.rsplit(".", 1)[-1],
                                  torch.arange(buf.shape[-1]).expand(buf.shape).clone(), persistent=False)
    return te.eval()


def _embedding_from_open_clip(state, text_config_dict: dict, name: str) -> torch.Tensor:
    from transformers import CLIPTextConfig

    cfg = CLIPTextConfig(**text_config_dict)
    blocks = _count_resblocks(state)
    if blocks == 0:
        raise ModelLoadError(f"{name} has no OpenCLIP text encoder ({LDM_TEXT_PREFIX}transformer.resblocks.*).",
                             "Use a full SD 2.1 checkpoint (with text encoder), not a UNet-only file.")
    if blocks - 1 != cfg.num_hidden_layers:
        raise ModelLoadError(f"{name}'s text encoder has {blocks} layers; SD 2.1 uses {cfg.num_hidden_layers + 1} "
                             "(the last one is skipped).", "Use a genuine SD 2.1 checkpoint.")
    width = tuple(state[LDM_TEXT_PREFIX + "token_embedding.weight"].shape)[-1] \
        if LDM_TEXT_PREFIX + "token_embedding.weight" in state else None
    if width != cfg.hidden_size:
        raise ModelLoadError(f"{name}'s text encoder width is {width}, expected {cfg.hidden_size}.",
                             "Use a genuine SD 2.1 checkpoint.")
    te = _text_encoder_from_state(cfg, open_clip_text_to_clip(state, cfg.num_hidden_layers))
    emb = empty_prompt_embedding(te)
    del te
    return emb


# ------------------------------------------------------------------ tiny model
def build_tiny_sd_parts(seed: int = 0):
    """Random tiny ``(unet, vae, text_encoder)`` with the real block layout (stack notes §7.1), fp32 on the CPU.

    The global RNG is left untouched (``fork_rng``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TINY_UNET)
        vae = AutoencoderKL(**TINY_VAE)
        te = CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    return unet.eval(), vae.eval(), te.eval()


def build_tiny_sd(device="cpu", dtype=torch.float32, config: Optional[SD21Config] = None,
                  seed: int = 0) -> SD21Backbone:
    """The tiny SD 2.1 twin ("tiny-sd") for tests: random from ``seed``, nothing downloaded."""
    unet, vae, te = build_tiny_sd_parts(seed)
    cfg = config if config is not None else SD21Config()
    emb = empty_prompt_embedding(te)
    return SD21Backbone("tiny-sd", _config_with(cfg, cfg.prediction_type), unet, vae, torch.device("cpu"),
                        torch.float32, emb).to(device, dtype)


# ------------------------------------------------------------------ single files
def _single_file_variant(shapes: Dict[str, tuple], name: str, prediction_type: str):
    """Which known SD 2.x layout a checkpoint holds -> (unet overrides, vae overrides, text config dict)."""
    key = LDM_UNET_PREFIX + "input_blocks.0.0.weight"
    if key not in shapes:
        raise ModelLoadError(f"{name} has no SD UNet ({key} is missing).", "Use a full SD 2.1 checkpoint.")
    channels, in_channels = shapes[key][0], shapes[key][1]
    if in_channels != 4:
        raise ModelLoadError(f"{name} is an SD 2.x variant with {in_channels} input channels (depth / inpainting), "
                             "not the plain text-to-image SD 2.1.", "Use v2-1_512-ema-pruned or v2-1_768-ema-pruned.")
    real_text = json.loads((CONFIG_DIR / "text_encoder" / "config.json").read_text())
    real_text = {k: v for k, v in real_text.items() if k not in ("architectures", "model_type")}
    if channels == 320:
        unet = dict(V_MODEL_UNET_OVERRIDES) if prediction_type == "v_prediction" else {}
        return unet, {}, real_text
    if channels == TINY_UNET["block_out_channels"][0]:
        unet = {k: v for k, v in TINY_UNET.items()}
        return unet, dict(TINY_VAE), dict(TINY_TEXT)
    raise ModelLoadError(f"{name} is an SD 2.x-style model with {channels} base channels; VidSeg knows SD 2.1 (320).",
                         "Use v2-1_512-ema-pruned or v2-1_768-ema-pruned.")


def _from_single_file(cls, state, part: str, overrides: dict, dtype: torch.dtype, name: str):
    try:
        model = cls.from_single_file(state, config=str(CONFIG_DIR), subfolder=part, local_files_only=True,
                                     torch_dtype=dtype, **overrides)
    except ModelLoadError:
        raise
    except Exception as exc:
        if "meta" in str(exc):  # weights absent from the file stay uninitialised ("meta") in diffusers
            raise ModelLoadError(f"The {part} weights in {name} are incomplete (some tensors are missing).",
                                 "Download the checkpoint again; use a complete SD 2.1 file.") from exc
        raise ModelLoadError(f"Cannot load the {part} of {name}: {type(exc).__name__}: {exc}",
                             "Use a complete, uncorrupted SD 2.1 checkpoint (v2-1_512-ema-pruned / "
                             "v2-1_768-ema-pruned).") from exc
    empty = [n for n, p in model.named_parameters() if p.is_meta]
    if empty:
        raise ModelLoadError(f"The {part} weights in {name} are incomplete ({len(empty)} tensors missing, "
                             f"e.g. {empty[0]}).", "Download the checkpoint again.")
    return model.eval()


def load_sd21_single_file(path, device, dtype, prediction_type: Optional[str] = None,
                          config: Optional[SD21Config] = None) -> SD21Backbone:
    """Load an original-layout SD 2.1 checkpoint (``.safetensors`` / ``.ckpt``) offline.

    ``prediction_type`` (``"epsilon"`` / ``"v_prediction"``; ``None`` or
    ``"auto"`` = from the file name, :func:`prediction_type_from_name`).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from .loading import load_state_dict

    path = Path(path)
    ptype = normalize_prediction_type(prediction_type) or prediction_type_from_name(path.name)
    cfg = _config_with(config, ptype)
    state = load_state_dict(path)
    shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    unet_over, vae_over, text_cfg = _single_file_variant(shapes, path.name, ptype)
    unet = _from_single_file(UNet2DConditionModel, state, "unet", unet_over, dtype, path.name)
    vae_dtype = torch.float32 if dtype == torch.float16 else dtype
    vae = _from_single_file(AutoencoderKL, state, "vae", vae_over, vae_dtype, path.name)
    emb = _embedding_from_open_clip(state, text_cfg, path.name)
    del state
    return SD21Backbone(path.name, cfg, unet, vae, torch.device("cpu"), dtype, emb).to(device, dtype)


# ------------------------------------------------------------------ diffusers folders
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}).", "Restore the model folder from its source.") from exc


def load_sd21_diffusers(folder, device, dtype, prediction_type: Optional[str] = None,
                        config: Optional[SD21Config] = None) -> SD21Backbone:
    """Load a diffusers-format SD 2.1 folder offline (``unet/``, ``vae/``, ``text_encoder/``).

    The prediction type comes from ``scheduler/scheduler_config.json`` when
    present (else from the folder name), unless ``prediction_type`` overrides it.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from .loading import check_folder_parts, weights_variant

    folder = Path(folder)
    check_folder_parts(folder, ("unet", "vae", "text_encoder"))
    unet_cfg = _read_json(folder / "unet" / "config.json")
    if unet_cfg.get("cross_attention_dim") == 768:
        raise ModelLoadError(f"{folder.name} is Stable Diffusion 1.x, not Stable Diffusion 2.1.",
                             "Use an SD 2.1 model (stabilityai/stable-diffusion-2-1-base or -2-1).")
    ptype = normalize_prediction_type(prediction_type)
    if ptype is None:
        sched = folder / "scheduler" / "scheduler_config.json"
        ptype = normalize_prediction_type(_read_json(sched).get("prediction_type")) if sched.is_file() else None
        ptype = ptype or prediction_type_from_name(folder.name)
    cfg = _config_with(config, ptype)
    vae_dtype = torch.float32 if dtype == torch.float16 else dtype
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True,
                                                    torch_dtype=dtype,
                                                    variant=weights_variant(folder / "unet", "diffusion_pytorch_model"))
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True, torch_dtype=vae_dtype,
                                            variant=weights_variant(folder / "vae", "diffusion_pytorch_model"))
        te, info = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True,
                                                 torch_dtype=torch.float32, output_loading_info=True,
                                                 variant=weights_variant(folder / "text_encoder", "model"))
    except Exception as exc:
        raise ModelLoadError(f"Cannot load the diffusers folder {folder.name}: {type(exc).__name__}: {exc}",
                             "Copy the complete model folder again from its source.") from exc
    missing = [k for k in (info or {}).get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise ModelLoadError(f"The text encoder of {folder.name} is incomplete ({len(missing)} tensors missing, "
                             f"e.g. {sorted(missing)[0]}).", "Copy the complete model folder again from its source.")
    if te.config.hidden_size != unet.config.cross_attention_dim:
        raise ModelLoadError(f"{folder.name}: text encoder width {te.config.hidden_size} does not match the UNet's "
                             f"cross-attention width {unet.config.cross_attention_dim}.",
                             "Use a consistent SD 2.1 folder.")
    emb = empty_prompt_embedding(te.eval())
    del te
    return SD21Backbone(folder.name, cfg, unet.eval(), vae.eval(), torch.device("cpu"), dtype,
                        emb).to(device, dtype)
