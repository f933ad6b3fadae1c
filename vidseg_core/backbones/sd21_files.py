"""Loading SD 2.1 offline: single files and diffusers folders, and the OpenCLIP text tower's conversion.

Single files (the original LDM layout) go through model-level
``from_single_file`` with the config folder shipped in ``configs/sd21``
(``local_files_only=True``); the text tower through this module's own
OpenCLIP → ``CLIPTextModel`` key conversion (the empty prompt is embedded once
and the tower dropped, :mod:`.sd21`).  Diffusers folders load per component
with ``from_pretrained(..., local_files_only=True)`` (docs/design/backbones.md#offline-loading-of-sd-21-single-files).
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Dict, Optional

import torch

from ..errors import ModelLoadError
from .config import SD21Config
from .sd21 import (CONFIG_DIR, LDM_TEXT_PREFIX, LDM_UNET_PREFIX, TINY_TEXT, TINY_UNET, TINY_VAE,
                   V_MODEL_UNET_OVERRIDES, SD21Backbone, _config_with, empty_prompt_embedding,
                   normalize_prediction_type, prediction_type_from_name)


# ------------------------------------------------------------------ text tower
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

    from .files import load_state_dict

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
    backbone = SD21Backbone(path.name, cfg, unet, vae, torch.device("cpu"), dtype, emb).to(device, dtype)
    backbone.text_encoder_loader = functools.partial(load_text_encoder_single_file, path, text_cfg)
    return backbone


def load_text_encoder_single_file(path, text_config_dict: dict):
    """The text tower of an original-layout SD 2.1 file, read again (safetensors: its text keys alone)."""
    from transformers import CLIPTextConfig

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                state = {k: f.get_tensor(k) for k in f.keys() if k.startswith(LDM_TEXT_PREFIX)}
        except Exception as exc:
            raise ModelLoadError(f"Cannot read the text encoder of {path.name}: {exc}.",
                                 "Download the checkpoint again.") from exc
    else:
        from .files import load_state_dict

        state = {k: v for k, v in load_state_dict(path).items() if k.startswith(LDM_TEXT_PREFIX)}
    cfg = CLIPTextConfig(**text_config_dict)
    if _count_resblocks(state) == 0:
        raise ModelLoadError(f"{path.name} has no OpenCLIP text encoder ({LDM_TEXT_PREFIX}transformer.resblocks.*).",
                             "Use a full SD 2.1 checkpoint (with text encoder), not a UNet-only file.")
    return _text_encoder_from_state(cfg, open_clip_text_to_clip(state, cfg.num_hidden_layers))


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

    from .files import check_folder_parts, weights_variant

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
    backbone = SD21Backbone(folder.name, cfg, unet.eval(), vae.eval(), torch.device("cpu"), dtype, emb)
    backbone = backbone.to(device, dtype)
    backbone.text_encoder_loader = functools.partial(_folder_text_encoder, folder)
    if (folder / "tokenizer" / "vocab.json").is_file() and (folder / "tokenizer" / "merges.txt").is_file():
        backbone.tokenizer_dir = folder / "tokenizer"
    return backbone


def _folder_text_encoder(folder: Path):
    """The text tower of a diffusers folder, loaded again (float32, CPU)."""
    from transformers import CLIPTextModel

    from .files import weights_variant

    try:
        te = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True, torch_dtype=torch.float32,
                                           variant=weights_variant(folder / "text_encoder", "model"))
    except Exception as exc:
        raise ModelLoadError(f"Cannot load the text encoder of {folder.name}: {type(exc).__name__}: {exc}",
                             "Copy the complete model folder again from its source.") from exc
    return te.eval()
