"""Guided Upsample (``VidSegGuidedUpsample``): the fast mode, coarse -> full resolution without diffusion passes."""
from __future__ import annotations

import dataclasses

import torch

from ..vidseg_core.upsample import UpsampleContext, make_upsampler
from . import comfy_bridge as cb
from .convert import image_batch
from .masked_modulation import check_frames_match
from .sockets import VIDSEG_LABELS, require, require_labels

#: frames moved to the compute device at once
CHUNK = 16


class VidSegGuidedUpsample:
    DESCRIPTION = (
        "Fast mode: the coarse label maps are brought to full resolution with a colour guided filter that follows "
        "the frame's edges (no diffusion passes, no model). Much faster than Masked Modulation, less precise on "
        "thin structures; good for previews and long videos.")
    CATEGORY = "VidSeg/stages"
    FUNCTION = "upsample"
    RETURN_TYPES = (VIDSEG_LABELS,)
    RETURN_NAMES = ("labels",)
    OUTPUT_TOOLTIPS = ("Label maps [T, H, W] at the frames' resolution, with the label table.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("IMAGE", {"tooltip": "The video (IMAGE batch) the labels were computed from: the guide."}),
            "coarse_labels": (VIDSEG_LABELS, {"tooltip": "Coarse labels from KNN Context Model (or CBR Refine)."}),
            "radius": ("INT", {"default": 0, "min": 0, "max": 256, "step": 1,
                               "tooltip": "Filter window radius in pixels; 0 = one coarse cell (about 16 px)."}),
            "eps": ("FLOAT", {"default": 0.0001, "min": 0.000001, "max": 1.0, "step": 0.00001,
                              "tooltip": "Regularisation: smaller follows colour edges more closely."}),
            "subsample": ("INT", {"default": 0, "min": 0, "max": 32, "step": 1,
                                  "tooltip": "Work at 1/subsample resolution (0 = automatic, about radius/4)."}),
            "softness": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 8.0, "step": 0.1,
                                   "tooltip": "Gaussian softening of the coarse labels in cells before filtering "
                                              "(0 = off)."}),
        }}

    def upsample(self, frames, coarse_labels, radius=0, eps=0.0001, subsample=0, softness=0.0):
        labels = require_labels(require(coarse_labels, "coarse_labels", "Connect KNN Context Model."))
        frames = image_batch(frames)
        check_frames_match(frames, labels)
        up = make_upsampler("guided_filter", radius=int(radius) or None, eps=float(eps),
                            subsample=int(subsample) or None, softness=float(softness))
        ids = torch.tensor(labels.table.values, dtype=torch.long)
        n = labels.num_frames
        H, W = labels.frame_size
        dev = cb.torch_device()
        progress = cb.Progress(n)
        progress(0, n)
        out = torch.empty(n, H, W, dtype=torch.long)
        coarse = labels.labels  # full-resolution labels are simply re-filtered
        for s in range(0, n, CHUNK):
            e = min(n, s + CHUNK)
            ctx = UpsampleContext(progress=lambda d, t, _s=s: progress(_s + d, n), cancel=cb.cancel_check)
            out[s:e] = up.upsample(frames[s:e].to(dev), coarse[s:e].to(dev), ids, ctx).cpu()
        progress(n, n)
        meta = {**labels.meta, "upsampler": "guided_filter"}
        return (dataclasses.replace(labels, labels=out, coarse=False, meta=meta),)


NODE_CLASS_MAPPINGS = {"VidSegGuidedUpsample": VidSegGuidedUpsample}
NODE_DISPLAY_NAME_MAPPINGS = {"VidSegGuidedUpsample": "Guided Upsample (fast, VidSeg)"}
