"""Segment Video (``VidSegSegmentVideo``): the whole method in one box with the authors' defaults.

Runs :class:`vidseg_core.pipeline.VideoSegmenter` batch by batch (features,
KMeans init on the reference batch, KNN context model + CBR, masked modulation
or the guided-filter fast mode), sharing one noisy latent per batch between the
feature pass and the modulation.
"""
from __future__ import annotations

from ..vidseg_core.pipeline import MODES
from .cbr_refine import METHODS
from .comfy_video import VIDEO
from .segment_run import (FLOAT_OUTPUTS, FLOAT_OUTPUTS_TOOLTIP, MASK_VIDEO_TOOLTIP, OVERLAY_VIDEO_TOOLTIP,
                          VIDEO_TOOLTIP, run_segment)
from .sockets import KEEP_MODEL_TOOLTIP, VIDSEG_LABELS, VIDSEG_MODEL


class VidSegSegmentVideo:
    DESCRIPTION = (
        "Zero-shot video segmentation in one node (the paper's full method with the authors' defaults): diffusion "
        "features per batch of 14 frames, KMeans on the reference batch, a KNN scene context model refined by CBR "
        "batch after batch, then masked modulation (quality) or a guided filter (fast) to full resolution. "
        "Connect a mask painted on one frame to track that object; without it the regions are unnamed clusters.")
    CATEGORY = "VidSeg"
    FUNCTION = "segment"
    RETURN_TYPES = (VIDSEG_LABELS, "MASK", "MASK", "IMAGE", "STRING", VIDEO, VIDEO)
    RETURN_NAMES = ("labels", "mask", "all_masks", "overlay", "info", "overlay_video", "mask_video")
    OUTPUT_TOOLTIPS = (
        "Label maps [T, H, W] with the label table (for Select Labels, Colorize, Save, Evaluate).",
        "MASK [T, H, W] of the labels chosen by mask_labels (default: every label except 0, i.e. the painted "
        "object when a reference mask is connected).",
        "Every label as a mask video, label after label: MASK [T * L, H, W].",
        "The frames with the label colours blended in [T, H, W, 3].",
        "Labels, timings and warnings of the run.",
        OVERLAY_VIDEO_TOOLTIP,
        MASK_VIDEO_TOOLTIP)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (VIDSEG_MODEL, {"tooltip": "The backbone from Load SD/SVD (VidSeg)."}),
                "num_clusters": ("INT", {"default": 20, "min": 1, "max": 255, "step": 1,
                                         "tooltip": "K of the KMeans initialisation (paper: 20; the authors' demo: 5)."}),
                "mode": (list(MODES), {"default": "quality",
                                       "tooltip": "quality = masked modulation (paper, 2 diffusion passes per label); "
                                                  "fast = guided filter (no extra passes)."}),
                "seed": ("INT", {"default": 1, "min": 0, "max": 0xFFFFFFFF, "step": 1, "control_after_generate": False,
                                 "tooltip": "Per-batch seed (authors: 1)."}),
                "keep_model_loaded": ("BOOLEAN", {"default": False, "tooltip": KEEP_MODEL_TOOLTIP}),
                "reference_frame": ("INT", {"default": 0, "min": 0, "max": 100000, "step": 1,
                                            "tooltip": "Frame the reference mask / label image belongs to."}),
                "mask_labels": ("STRING", {"default": "",
                                           "tooltip": "Labels for the mask output, e.g. '1' or 'swan, 3'; empty = "
                                                      "every label except 0."}),
                "batch_size": ("INT", {"default": 14, "min": 1, "max": 64, "step": 1,
                                       "tooltip": "Frames per batch B (paper: 14)."}),
                "refiner": (list(METHODS), {"default": "cbr",
                                            "tooltip": "cbr = paper, cbr_compat = the authors' code, none = KNN only."}),
            },
            "optional": {
                "frames": ("IMAGE", {"tooltip": "The video as an IMAGE batch [T,H,W,3] (or connect video instead; "
                                                "sides >= 64 px; they are processed at the size rounded down to "
                                                "multiples of 64)."}),
                "video": (VIDEO, {"tooltip": VIDEO_TOOLTIP}),
                "reference_mask": ("MASK", {"tooltip": "Mask painted on the reference frame (>= 0.5 = object), e.g. "
                                                       "from Load Image's mask editor."}),
                "reference_labels": ("IMAGE", {"tooltip": "Or: a label map image of the reference frame (palette "
                                                          "colours or grey ids)."}),
                "label_names": ("STRING", {"default": "", "tooltip": "Optional names, e.g. '1: swan, 0: water'."}),
                "float_outputs": (list(FLOAT_OUTPUTS), {"default": "auto", "tooltip": FLOAT_OUTPUTS_TOOLTIP}),
            },
        }

    def segment(self, model, frames=None, num_clusters=20, mode="quality", seed=1, keep_model_loaded=False,
                reference_frame=0, mask_labels="", batch_size=14, refiner="cbr", reference_mask=None,
                reference_labels=None, label_names="", video=None, float_outputs="auto"):
        run = run_segment(model, frames, video, num_clusters, mode, seed, keep_model_loaded, reference_frame,
                          mask_labels, batch_size, refiner, reference_mask, reference_labels, label_names,
                          float_outputs)
        info = "\n".join([self.describe(run.summary, run.chosen)] + run.notes)
        return (run.labels, run.mask, run.all_masks, run.overlay, info, run.overlay_video, run.mask_video)

    @staticmethod
    def describe(summary, chosen) -> str:
        d = summary.to_dict()
        lines = [f"{summary.num_frames} frames {summary.frame_size[1]}x{summary.frame_size[0]} with {summary.backbone} "
                 f"({d['settings']['mode']}), {len(summary.table)} labels: "
                 + ", ".join(f"{e.value} ({e.name})" for e in summary.table),
                 f"mask output = labels {chosen}",
                 "seconds: " + ", ".join(f"{k} {v}" for k, v in d["seconds"].items())
                 + f" ({d['seconds_per_frame']} s/frame)"]
        if summary.lost_labels:
            lines.append(f"reference labels lost (no KMeans cluster won them; raise num_clusters): "
                         f"{summary.lost_labels}")
        return "\n".join(lines)


NODE_CLASS_MAPPINGS = {"VidSegSegmentVideo": VidSegSegmentVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"VidSegSegmentVideo": "Segment Video (VidSeg)"}
