"""Extract Block Features (``VidSegExtractFeatures``): paper §4.1 over the whole video, batch by batch."""
from __future__ import annotations

import math

from ..vidseg_core.features import extract_features
from ..vidseg_core.video_io import TensorFrames
from . import comfy_bridge as cb
from .comfy_video import VIDEO, frames_or_video
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
            "batch_size": ("INT", {"default": 14, "min": 1, "max": 64, "step": 1,
                                   "tooltip": "Frames per batch B (paper: 14). SVD sees a batch as one clip; a short "
                                              "last batch is computed as the last B frames."}),
            "seed": ("INT", {"default": 1, "min": 0, "max": 0xFFFFFFFF, "step": 1, "control_after_generate": False,
                             "tooltip": "Per-batch seed of the encoding / noise (authors: 1). Masked modulation "
                                        "re-uses it to rebuild the same noisy latents."}),
            "keep_model_loaded": ("BOOLEAN", {"default": False, "tooltip": KEEP_MODEL_TOOLTIP}),
        }, "optional": {
            "frames": ("IMAGE", {"tooltip": "The video as an IMAGE batch [T,H,W,3], e.g. from Get Video Components "
                                            "(or connect video). Both sides must be at least 64 px."}),
            "video": (VIDEO, {"tooltip": "Or: a VIDEO (core Load Video / Trim Video), decoded batch by batch. "
                                         "Connect frames or video, not both."}),
        }}

    def extract(self, model, frames=None, batch_size=14, seed=1, keep_model_loaded=False, video=None):
        source = frames_or_video(frames, video, "Extract Block Features")  # a VIDEO is decoded batch by batch
        n = len(source)
        progress = cb.Progress(n)
        progress(0, n)
        try:
            with cb.model_on_device(model, keep_model_loaded) as bb:
                feats = extract_features(bb, source.frames if isinstance(source, TensorFrames) else source, batch_size=batch_size, seed=seed,
                                         progress=progress)
        finally:
            source.close()
        feats.meta["num_batches"] = math.ceil(n / batch_size)
        return (feats,)


NODE_CLASS_MAPPINGS = {"VidSegExtractFeatures": VidSegExtractFeatures}
NODE_DISPLAY_NAME_MAPPINGS = {"VidSegExtractFeatures": "Extract Block Features (VidSeg)"}
