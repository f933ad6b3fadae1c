"""Extract Block Features (``VidSegExtractFeatures``): paper §4.1 over the whole video, batch by batch."""
from __future__ import annotations

import math

from ..vidseg_core.features import extract_features
from ..vidseg_core.video_io import TensorFrames
from .comfy_adapters import bridge
from .comfy_adapters.video import VIDEO, frames_or_video
from .schema import Boolean, Int, Node, Out, Socket
from .sockets import KEEP_MODEL_TOOLTIP, MODEL_TOOLTIP, VIDSEG_FEATURES, VIDSEG_MODEL


class VidSegExtractFeatures:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegExtractFeatures", "Extract Block Features (VidSeg)", "VidSeg/stages",
            "Diffusion features of every frame (paper §4.1): frames are cut into batches of B, resized down to "
            "multiples of 64, encoded, noised to step t_m and denoised to t_k while the self-attention queries of "
            "decoder blocks 6-8 are captured. Features are kept on the CPU in fp16 (grid = frame size / 16).",
            inputs=(
                Socket("model", VIDSEG_MODEL, MODEL_TOOLTIP),
                Socket("frames", "IMAGE", "The video as an IMAGE batch [T,H,W,3], e.g. from Get Video Components "
                                          "(or connect video). Both sides must be at least 64 px.", optional=True),
                Int("batch_size", 14, 1, 64, "Frames per batch B (paper: 14). SVD sees a batch as one clip; a short "
                                             "last batch is computed as the last B frames."),
                Int("seed", 1, 0, 0xFFFFFFFF, "Per-batch seed of the encoding / noise (authors: 1). Masked modulation "
                                              "re-uses it to rebuild the same noisy latents.",
                    control_after_generate=False),
                Boolean("keep_model_loaded", False, KEEP_MODEL_TOOLTIP),
                Socket("video", VIDEO, "Or: a VIDEO (core Load Video / Trim Video), decoded batch by batch. Connect "
                                       "frames or video, not both.", optional=True),
            ),
            outputs=(Out("features", VIDSEG_FEATURES, "Per-frame aggregated (blocks 6-8) and correspondence (block 7) "
                                                      "features of the video."),),
            function="extract", search_aliases=("diffusion features", "attention features"))

    def extract(self, model, frames=None, batch_size=14, seed=1, keep_model_loaded=False, video=None):
        source = frames_or_video(frames, video, "Extract Block Features")  # a VIDEO is decoded batch by batch
        n = len(source)
        progress = bridge.Progress(n)
        progress(0, n)
        try:
            with bridge.model_on_device(model, keep_model_loaded) as backbone:
                frames_in = source.frames if isinstance(source, TensorFrames) else source
                feats = extract_features(backbone, frames_in, batch_size=batch_size, seed=seed, progress=progress)
        finally:
            source.close()
        feats.meta["num_batches"] = math.ceil(n / batch_size)
        return (feats,)


NODES = (VidSegExtractFeatures,)
