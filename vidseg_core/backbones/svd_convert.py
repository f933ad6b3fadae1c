"""Stable Video Diffusion: original (sgm) single-file layout <-> diffusers / transformers.

diffusers cannot load ``svd.safetensors`` / ``svd_xt.safetensors`` (docs/design/backbones.md#svd-single-files), so the pack converts them itself, both ways:

* :func:`sgm_to_diffusers` — an original checkpoint (any mapping of key ->
  tensor, read lazily) to the state dicts of ``UNetSpatioTemporalConditionModel``,
  ``AutoencoderKLTemporalDecoder`` and ``CLIPVisionModelWithProjection``;
* :func:`diffusers_to_sgm` — the inverse, so tests can write a (tiny)
  checkpoint in the original layout.

Both directions are driven by one rule per *diffusers* key (:mod:`.svd_keymap`,
which also gives the facts the mapping rests on and how they were checked), so
they cannot drift apart.  Keys of the original file under the converted
prefixes must all be consumed (leftovers are an error naming them); keys
outside them are returned as ``ignored``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional

import torch

from ..errors import ModelLoadError
from .svd_keymap import (CLIP_PREFIX, COND_VAE_PREFIX, QKV, UNET_PREFIX, VAE_PREFIX,  # noqa: F401 - re-exported
                         UNetLayout, clip_rule, encoder_keys, fold_quant_conv, from_sgm_tensor, identity_quant_conv,
                         to_sgm_tensor, unet_rule, vae_levels, vae_rule)


# ------------------------------------------------------------------ diffusers -> sgm
def unet_to_sgm(unet: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``model.diffusion_model.*`` tensors of a diffusers SVD UNet state dict."""
    layout = UNetLayout.from_keys(unet.keys())
    out = {}
    for k, v in unet.items():
        new, op = unet_rule(k, layout)
        out[UNET_PREFIX + new] = to_sgm_tensor(v, op)
    return out


def vae_to_sgm(vae: Mapping[str, torch.Tensor],
               cond_encoder: Optional[Mapping[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """``first_stage_model.*`` (encoder with ``quant_conv`` folded in, temporal decoder) and
    ``conditioner.embedders.3.encoder.{encoder,quant_conv}.*`` (``cond_encoder``, else the VAE's own)."""
    levels = vae_levels(vae.keys())
    out = {}
    for k, v in vae.items():
        if k.startswith(("encoder.", "decoder.")):
            new, op = vae_rule(k, levels)
            out[VAE_PREFIX + new] = to_sgm_tensor(v, op)
    w, b = fold_quant_conv(vae["encoder.conv_out.weight"], vae["encoder.conv_out.bias"],
                           vae["quant_conv.weight"], vae["quant_conv.bias"])
    out[VAE_PREFIX + "encoder.conv_out.weight"], out[VAE_PREFIX + "encoder.conv_out.bias"] = w, b
    cond = cond_encoder if cond_encoder is not None else vae
    for k in encoder_keys(cond.keys()):
        new, op = vae_rule(k, levels)
        out[COND_VAE_PREFIX + new] = to_sgm_tensor(cond[k], op)
    out[COND_VAE_PREFIX + "quant_conv.weight"] = cond["quant_conv.weight"]
    out[COND_VAE_PREFIX + "quant_conv.bias"] = cond["quant_conv.bias"]
    return out


def clip_to_sgm(image_encoder: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``conditioner.embedders.0.open_clip.model.visual.*`` of a ``CLIPVisionModelWithProjection`` state dict."""
    out = {}
    qkv: Dict[str, Dict[str, torch.Tensor]] = {}
    for k, v in image_encoder.items():
        new, op = clip_rule(k)
        if op in QKV:
            qkv.setdefault(new, {})[op] = v
        else:
            out[CLIP_PREFIX + new] = to_sgm_tensor(v, op)
    for new, parts in qkv.items():
        if set(parts) != set(QKV):
            raise ModelLoadError(f"The image encoder lacks part of {new} (has {sorted(parts)}).",
                                 "Use a complete CLIPVisionModelWithProjection.")
        out[CLIP_PREFIX + new] = torch.cat([parts[n] for n in QKV], dim=0)
    return out


def diffusers_to_sgm(unet: Mapping[str, torch.Tensor], vae: Mapping[str, torch.Tensor],
                     image_encoder: Mapping[str, torch.Tensor],
                     cond_encoder: Optional[Mapping[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Original-layout state dict of an SVD model given as diffusers / transformers state dicts.

    ``cond_encoder`` (keys ``encoder.*``, ``quant_conv.*``) is the separately kept
    conditioning encoder, if any; otherwise the VAE's encoder + ``quant_conv``
    is written as ``conditioner.embedders.3.encoder``.
    """
    out = unet_to_sgm(unet)
    out.update(vae_to_sgm(vae, cond_encoder))
    out.update(clip_to_sgm(image_encoder))
    return out


# ------------------------------------------------------------------ sgm -> diffusers
@dataclass
class ConvertedSVD:
    """diffusers / transformers state dicts converted from an original file."""

    unet: Dict[str, torch.Tensor]
    vae: Dict[str, torch.Tensor]
    image_encoder: Dict[str, torch.Tensor]
    #: the conditioning encoder (``encoder.*``, ``quant_conv.*``) when it differs from the first-stage one
    cond_encoder: Optional[Dict[str, torch.Tensor]] = None
    #: keys of the file outside the converted parts (nothing VidSeg uses)
    ignored: List[str] = field(default_factory=list)


class _Reader:
    """Fetches tensors once each, recording what was used."""

    def __init__(self, source):
        self.source = source
        self.keys = set(source.keys())
        self.used: set = set()
        self.missing: List[str] = []

    def has(self, key: str) -> bool:
        return key in self.keys

    def get(self, key: str) -> Optional[torch.Tensor]:
        if key not in self.keys:
            self.missing.append(key)
            return None
        self.used.add(key)
        return self.source[key]


def _encoders_agree(first_stage: Dict[str, torch.Tensor], cond: Dict[str, torch.Tensor]) -> bool:
    """True if the first-stage encoder is the conditioning encoder with quant_conv folded in."""
    for k, v in first_stage.items():
        if k.startswith("encoder.conv_out."):
            continue
        c = cond[k]
        if v.shape != c.shape or not torch.equal(v.float(), c.float()):
            return False
    w, b = fold_quant_conv(cond["encoder.conv_out.weight"], cond["encoder.conv_out.bias"],
                           cond["quant_conv.weight"], cond["quant_conv.bias"])
    for folded, stored in ((w, first_stage["encoder.conv_out.weight"]), (b, first_stage["encoder.conv_out.bias"])):
        if folded.shape != stored.shape:
            return False
        tol = 1e-3 * float(stored.float().abs().max()) + 1e-6
        if float((folded.float() - stored.float()).abs().max()) > tol:
            return False
    return True


def sgm_to_diffusers(source, unet_keys: Iterable[str], vae_keys: Iterable[str],
                     clip_keys: Iterable[str]) -> ConvertedSVD:
    """Convert an original-layout checkpoint to the given diffusers / transformers keys.

    ``source`` needs ``keys()`` and ``[key]`` (a dict, or a lazy safetensors
    reader).  ``*_keys`` are the state-dict keys of the target models.  Raises
    :class:`ModelLoadError` naming missing keys and unconsumed keys under the
    converted prefixes.
    """
    r = _Reader(source)
    unet_keys, vae_keys, clip_keys = list(unet_keys), list(vae_keys), list(clip_keys)

    layout = UNetLayout.from_keys(unet_keys)
    unet: Dict[str, torch.Tensor] = {}
    for k in unet_keys:
        new, op = unet_rule(k, layout)
        t = r.get(UNET_PREFIX + new)
        if t is not None:
            unet[k] = from_sgm_tensor(t, op)

    levels = vae_levels(vae_keys)
    vae: Dict[str, torch.Tensor] = {}
    for k in vae_keys:
        if k.startswith("decoder."):
            new, op = vae_rule(k, levels)
            t = r.get(VAE_PREFIX + new)
            if t is not None:
                vae[k] = from_sgm_tensor(t, op)
    first_stage: Dict[str, torch.Tensor] = {}
    for k in encoder_keys(vae_keys):
        new, op = vae_rule(k, levels)
        t = r.get(VAE_PREFIX + new)
        if t is not None:
            first_stage[k] = from_sgm_tensor(t, op)
    cond: Optional[Dict[str, torch.Tensor]] = None
    if r.has(COND_VAE_PREFIX + "encoder.conv_in.weight"):
        cond = {}
        for k in encoder_keys(vae_keys):
            new, op = vae_rule(k, levels)
            t = r.get(COND_VAE_PREFIX + new)
            if t is not None:
                cond[k] = from_sgm_tensor(t, op)
        for p in ("weight", "bias"):
            t = r.get(f"{COND_VAE_PREFIX}quant_conv.{p}")
            if t is not None:
                cond[f"quant_conv.{p}"] = t

    qkv_cache: Dict[str, torch.Tensor] = {}
    clip: Dict[str, torch.Tensor] = {}
    for k in clip_keys:
        new, op = clip_rule(k)
        if op in QKV:
            if new not in qkv_cache:
                t = r.get(CLIP_PREFIX + new)
                if t is None:
                    continue
                qkv_cache[new] = t
            full = qkv_cache[new]
            if full.shape[0] % 3:
                raise ModelLoadError(f"{CLIP_PREFIX + new} has shape {tuple(full.shape)}, not 3 stacked projections.",
                                     "The checkpoint is not an SVD OpenCLIP image tower; use svd / svd_xt.")
            n = full.shape[0] // 3
            i = QKV.index(op)
            clip[k] = full[i * n:(i + 1) * n].clone()
        else:
            t = r.get(CLIP_PREFIX + new)
            if t is not None:
                clip[k] = from_sgm_tensor(t, op)

    if r.missing:
        shown = ", ".join(r.missing[:8]) + (f" (and {len(r.missing) - 8} more)" if len(r.missing) > 8 else "")
        raise ModelLoadError(f"The SVD checkpoint is incomplete: {len(r.missing)} tensor(s) are missing, e.g. {shown}.",
                             "Download the complete svd.safetensors / svd_xt.safetensors again "
                             "(image-decoder variants are not supported).")
    converted = (UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX, COND_VAE_PREFIX + "encoder.", COND_VAE_PREFIX + "quant_conv.")
    leftovers = sorted(k for k in r.keys - r.used if k.startswith(converted))
    if leftovers:
        shown = ", ".join(leftovers[:8]) + (f" (and {len(leftovers) - 8} more)" if len(leftovers) > 8 else "")
        raise ModelLoadError(f"The SVD checkpoint has {len(leftovers)} tensor(s) this converter does not know: {shown}.",
                             "Use the original svd.safetensors / svd_xt.safetensors (other SVD variants or "
                             "fine-tunes with extra layers are not supported).")
    ignored = sorted(r.keys - r.used)

    if cond is not None and _encoders_agree(first_stage, cond):
        vae.update(cond)
        cond = None
    else:
        vae.update(first_stage)
        w, b = identity_quant_conv(first_stage["encoder.conv_out.weight"].shape[0], first_stage["encoder.conv_out.weight"])
        vae["quant_conv.weight"], vae["quant_conv.bias"] = w, b
    return ConvertedSVD(unet, vae, clip, cond, ignored)
