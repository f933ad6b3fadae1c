"""Extract Block Features (``VidSegExtractFeatures``): paper §4.1 over the whole video, batch by batch."""
from __future__ import annotations

import math

from ..vidseg_core.features import extract_features
from . import comfy_bridge as cb
from .convert import image_batch
from .sockets import KEEP_MODEL_TOOLTIP, VIDSEG_FEATURES, VIDSEG_MODEL


class VidSegExtractFeatures:
    DESCRIPTION = (
        "Diffusion features of every frame (paper §4.1): frames are cut into batches of B, resized down to multiples "
        "of 64, encoded, noised to step t_m and denoised to t_k while the self-attention queries of decoder blocks "
        "6-8 are captured. Features are kept on the CPU in fp16 (grid = frame size / 16).")
    CATEGORY = "VidSeg/stages"
    FUNCTION = "extract"
    RETURN_TYPES = (VIDSEG_FEATURES,)
    RETURN_NAMES = ("features",)
    OUTPUT_TOOLTIPS = ("Per-frame aggregated (blocks 6-8) and correspondence (block 7) features of the video.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (VIDSEG_MODEL, {"tooltip": "The backbone from Load SD/SVD (VidSeg)."}),
            "frames": ("IMAGE", {"tooltip": "The video as an IMAGE batch [T,H,W,3], e.g. from Get Video Components. "
                                            "Both sides must be at least 64 px."}),
            "batch_size": ("INT", {"default": 14, "min": 1, "max": 64, "step": 1,
                                   "tooltip": "Frames per batch B (paper: 14). SVD sees a batch as one clip; a short "
                                              "last batch is computed as the last B frames."}),
            "seed": ("INT", {"default": 1, "min": 0, "max": 0xFFFFFFFF, "step": 1, "control_after_generate": False,
                             "tooltip": "Per-batch seed of the encoding / noise (authors: 1). Masked modulation "
                                        "re-uses it to rebuild the same noisy latents."}),
            "keep_model_loaded": ("BOOLEAN", {"default": False, "tooltip": KEEP_MODEL_TOOLTIP}),
        }}

    def extract(self, model, frames, batch_size=14, seed=1, keep_model_loaded=False):
        frames = image_batch(frames)
        n = int(frames.shape[0])
        progress = cb.Progress(n)
        progress(0, n)
        with cb.model_on_device(model, keep_model_loaded) as bb:
            feats = extract_features(bb, frames, batch_size=batch_size, seed=seed, progress=progress)
        feats.meta["num_batches"] = math.ceil(n / batch_size)
        return (feats,)


NODE_CLASS_MAPPINGS = {"VidSegExtractFeatures": VidSegExtractFeatures}
NODE_DISPLAY_NAME_MAPPINGS = {"VidSegExtractFeatures": "Extract Block Features (VidSeg)"}
