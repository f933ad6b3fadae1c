"""VidSeg Model from ComfyUI (``VidSegModelFromComfy``): core loader objects -> the pack's model socket."""
from __future__ import annotations

import logging

from .comfy_native import SUPPORTED, _sigma_check, _unused_wrappers, backbone_from_comfy
from .sockets import VIDSEG_MODEL, ModelHandle

log = logging.getLogger("vidseg")


class VidSegModelFromComfy:
    DESCRIPTION = (
        "Runs VidSeg on the models ComfyUI already loaded: SD 2.1 from Load Checkpoint (MODEL + CLIP + VAE) or "
        "SVD from Image Only Checkpoint Loader (MODEL + CLIP_VISION + VAE). No second copy of the weights; "
        "ComfyUI's model management (offloading, low-VRAM partial loading, LoRA / merges on the MODEL) applies. "
        f"Supported: {SUPPORTED}. The input MODEL is never modified (VidSeg patches a clone).")
    CATEGORY = "VidSeg/loaders"
    FUNCTION = "convert"
    RETURN_TYPES = (VIDSEG_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The diffusion backbone for the VidSeg nodes, computing through ComfyUI's MODEL.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "MODEL of Load Checkpoint (SD 2.1) or Image Only Checkpoint Loader (SVD)."}),
            "vae": ("VAE", {"tooltip": "VAE of the same loader."}),
        }, "optional": {
            "clip": ("CLIP", {"tooltip": "SD 2.1: CLIP of Load Checkpoint (the empty prompt is the condition)."}),
            "clip_vision": ("CLIP_VISION", {"tooltip": "SVD: CLIP_VISION of Image Only Checkpoint Loader."}),
        }}

    def convert(self, model, vae, clip=None, clip_vision=None):
        bb = backbone_from_comfy(model, vae, clip=clip, clip_vision=clip_vision)
        for note in (_sigma_check(bb), _unused_wrappers(bb)):
            if note:
                log.warning("[VidSeg] %s", note)
        return (ModelHandle(bb, bb.name, bb.device, bb.dtype),)


NODE_CLASS_MAPPINGS = {"VidSegModelFromComfy": VidSegModelFromComfy}
NODE_DISPLAY_NAME_MAPPINGS = {"VidSegModelFromComfy": "VidSeg Model from ComfyUI"}
