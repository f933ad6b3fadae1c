"""VidSeg backbones over the objects ComfyUI's own loaders give (``MODEL``, ``VAE``, ``CLIP``, ``CLIP_VISION``).

:class:`ComfySD21Backbone` (MODEL + CLIP + VAE of "Load Checkpoint") and
:class:`ComfySVDBackbone` (MODEL + CLIP_VISION + VAE of "Image Only Checkpoint
Loader") implement the core's one backbone interface
(:class:`vidseg_core.backbones.Backbone`), so every VidSeg node accepts them.
The authors' computation is reproduced exactly (docs/design/authors_code.md#effective-settings; how each
step maps: docs/design/comfyui_integration.md#how-each-step-of-the-method-maps):

* the UNet runs through ``BaseModel.apply_model`` of a **clone** of the MODEL
  (the input MODEL's options are never touched), loaded by
  ``comfy.model_management.load_models_gpu`` (partial loading when VRAM is short);
* the attention hooks of the core (feature capture, q/k injection, masked
  modulation) run inside ComfyUI's public patch points: one ``attn1`` / ``attn2``
  replace patch per decoder block (``("output", b, 0)``, b = 3..11) that calls a
  replace patch already on the MODEL instead of dropping it, and one
  ``attn1_output_patch`` / ``attn2_output_patch`` (the offset after ``to_out``);
* the sampler loop, CFG and latent blending stay the core's (:class:`Backbone`);
  the schedule is the core's — SD 2.1's DDPM timesteps 999, 959, …, 39 (ComfyUI
  maps each σ back to its discrete timestep), SVD's EDM σ's;
* VAE encode draws the posterior *sample* as the authors do (ComfyUI's
  ``vae.encode`` takes the mode); decode calls the first-stage decoder per
  ``decode_chunk`` frames (no silent tiling fallback);
* interrupts: ComfyUI's flag is checked before every UNet / VAE pass and in
  every decoder block, so a cancel stops within a fraction of one UNet pass;
* ``torch.compile`` (a TorchCompileModel node on the MODEL, or the node's
  ``compile`` input): ComfyUI's UNet blocks and the VAE compiled regionally by
  the core (``vidseg_core/compile.py``), the patches kept out of the graphs,
  active only during the adapter's own calls (:func:`torch_compile_request`);
* SVD conditioning per batch: the core's :func:`clip_preprocess` (whole frame
  squashed, no crop) and the vision model called directly (not
  ``clip_vision.encode_image``, which crops), the posterior mode of the noised
  first frame, and ``encode_adm(fps = fps_id + 1, ...)`` (ComfyUI subtracts 1).

ComfyUI is only reached through the objects handed in and, through
:mod:`.bridge`, ``comfy.model_management`` / ``comfy.ldm.modules.attention``.

Layout: :mod:`.native_base` (the shared :class:`ComfyBackbone` and its patches),
:mod:`.native_sd`, :mod:`.native_svd`; this module picks one for the objects given and
re-exports the names used elsewhere.
"""
from __future__ import annotations

from typing import Optional

import torch

from ...vidseg_core.backbones.attention import LayerId  # noqa: F401 - re-exported (tests, tools)
from ...vidseg_core.errors import InputError
from .bridge import optimized_attention as _optimized_attention  # noqa: F401 - re-exported
from .native_base import (DECODER_BLOCKS, SUPPORTED, AttentionOutput, AttentionReplace,  # noqa: F401
                                ComfyBackbone, model_family)
from .native_sd import ComfySD21Backbone
from .native_svd import ComfySVDBackbone, ComfySVDCondition


def backbone_from_comfy(model, vae, clip=None, clip_vision=None, name: Optional[str] = None) -> ComfyBackbone:
    """The VidSeg backbone for core objects: family from the MODEL, readable errors for missing parts."""
    family = model_family(model)
    if vae is None or not hasattr(vae, "first_stage_model"):
        raise InputError(f"The 'vae' input is {type(vae).__name__}, not a ComfyUI VAE.",
                         "Connect the VAE output of the same checkpoint loader.")
    if family == "sd":
        if clip is None or not hasattr(clip, "tokenize"):
            raise InputError("Stable Diffusion 2.1 needs its CLIP (the empty prompt's embedding is the condition).",
                             "Connect the CLIP output of Load Checkpoint to 'clip'.")
        return ComfySD21Backbone(model, clip, vae, name=name or "comfy-sd21")
    if clip_vision is None or not hasattr(clip_vision, "model"):
        raise InputError("Stable Video Diffusion needs its CLIP_VISION (the first frame's image embedding).",
                         "Connect the CLIP_VISION output of Image Only Checkpoint Loader (img2vid model) to "
                         "'clip_vision'.")
    return ComfySVDBackbone(model, clip_vision, vae, name=name or "comfy-svd")


def _sigma_check(backbone: ComfyBackbone) -> Optional[str]:
    """SD only: do ComfyUI's σ of the schedule's timesteps agree with the core's (same β schedule)?"""
    if backbone.family != "sd":
        return None
    try:
        ms = backbone.patched.get_model_object("model_sampling")
        theirs = ms.sigmas.detach().double().cpu()[torch.tensor(backbone.timesteps())]
    except Exception:  # noqa: BLE001 - informative only
        return None
    ours = backbone.sigmas()[:-1]
    rel = float(((theirs - ours).abs() / ours).max())
    return None if rel < 1e-4 else (f"the MODEL's noise schedule differs from SD 2.1's by {rel:.2e} (relative): "
                                    "VidSeg uses SD 2.1's")


#: sampler functions in a MODEL's options that ComfyUI's samplers call and VidSeg's own sampler does not
_SAMPLER_FUNCTIONS = ("model_function_wrapper", "sampler_cfg_function", "sampler_pre_cfg_function",
                      "sampler_post_cfg_function")


#: where ComfyUI's TorchCompileModel node leaves its request on the MODEL (comfy_api.torch_helpers, v0.3.64)
TORCH_COMPILE_WRAPPER = ("apply_model", "torch.compile")
TORCH_COMPILE_KWARGS = "torch_compile_kwargs"


def torch_compile_request(model) -> Optional[dict]:
    """The ``torch.compile`` arguments (backend, mode, dynamic, options) a TorchCompileModel node set on this
    MODEL, or None.  Its wrapper would compile the whole ``diffusion_model`` inside ComfyUI's samplers only;
    VidSeg honours the request with its own regional compilation (``vidseg_core/compile.py``)."""
    kind, key = TORCH_COMPILE_WRAPPER
    if not ((getattr(model, "wrappers", None) or {}).get(kind) or {}).get(key):
        return None
    kwargs = dict((getattr(model, "model_options", None) or {}).get(TORCH_COMPILE_KWARGS) or {})
    return {"backend": kwargs.get("backend") or "inductor", "mode": kwargs.get("mode"),
            "dynamic": kwargs.get("dynamic"), "options": kwargs.get("options")}


def _unused_wrappers(backbone: ComfyBackbone, honoured=()) -> Optional[str]:
    """What the MODEL carries that only ComfyUI's samplers run, or None.  ComfyUI merges the patcher's own
    ``wrappers`` (e.g. an extension's ``diffusion_model`` wrapper) into the options when it samples; VidSeg
    runs its own sampler (the method's), so they, and the sampler functions, are not applied: said, not
    silent.  ``honoured``: ``(kind, key)`` wrappers VidSeg applies its own way (TorchCompileModel's)."""
    model = backbone.source_model
    found = [f"{kind} wrapper '{key}'" for kind, table in sorted((getattr(model, "wrappers", None) or {}).items())
             for key, fns in sorted((table or {}).items()) if fns and (kind, key) not in honoured]
    options = getattr(model, "model_options", None) or {}
    found += [name for name in _SAMPLER_FUNCTIONS if options.get(name)]
    if not found:
        return None
    compile_note = ("; TorchCompileModel's request is honoured only with compile 'auto' / 'on'"
                    if TORCH_COMPILE_WRAPPER not in honoured and torch_compile_request(model) else "")
    return (f"this MODEL carries {', '.join(found)}, which ComfyUI's samplers apply and VidSeg's own sampler does "
            f"not: VidSeg computes with the model without them{compile_note}.")


__all__ = ["ComfyBackbone", "ComfySD21Backbone", "ComfySVDBackbone", "ComfySVDCondition", "backbone_from_comfy",
           "model_family", "torch_compile_request", "SUPPORTED"]
