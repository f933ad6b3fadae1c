"""Guided Upsample (``VidSegGuidedUpsample``): the fast mode, coarse -> full resolution without diffusion passes."""
from __future__ import annotations

import dataclasses

import torch

from ..vidseg_core.upsample import UpsampleContext, make_upsampler
from .comfy_adapters import bridge
from .convert import image_batch
from .masked_modulation import check_frames_match
from .schema import Float, Int, Node, Out, Socket
from .sockets import VIDSEG_LABELS, require, require_labels

#: frames moved to the compute device at once
CHUNK = 16


class VidSegGuidedUpsample:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegGuidedUpsample", "Guided Upsample (fast, VidSeg)", "VidSeg/stages",
            "Fast mode: the coarse label maps are brought to full resolution with a colour guided filter that follows "
            "the frame's edges (no diffusion passes, no model). Much faster than Masked Modulation, less precise on "
            "thin structures; good for previews and long videos.",
            inputs=(
                Socket("frames", "IMAGE", "The video (IMAGE batch) the labels were computed from: the guide."),
                Socket("coarse_labels", VIDSEG_LABELS, "Coarse labels from KNN Context Model (or CBR Refine)."),
                Int("radius", 0, 0, 256, "Filter window radius in pixels; 0 = one coarse cell (about 16 px)."),
                Float("eps", 0.0001, 0.000001, 1.0, 0.00001, "Regularisation: smaller follows colour edges more "
                                                             "closely.", advanced=True),
                Int("subsample", 0, 0, 32, "Work at 1/subsample resolution (0 = automatic, about radius/4).",
                    advanced=True),
                Float("softness", 0.0, 0.0, 8.0, 0.1, "Gaussian softening of the coarse labels in cells before "
                                                      "filtering (0 = off).", advanced=True),
            ),
            outputs=(Out("labels", VIDSEG_LABELS, "Label maps [T, H, W] at the frames' resolution, with the label "
                                                  "table."),),
            function="upsample", search_aliases=("guided filter", "fast upsample", "labels to full resolution"))

    def upsample(self, frames, coarse_labels, radius=0, eps=0.0001, subsample=0, softness=0.0):
        labels = require_labels(require(coarse_labels, "coarse_labels", "Connect KNN Context Model."))
        frames = image_batch(frames)
        check_frames_match(frames, labels)
        up = make_upsampler("guided_filter", radius=int(radius) or None, eps=float(eps),
                            subsample=int(subsample) or None, softness=float(softness))
        ids = torch.tensor(labels.table.values, dtype=torch.long)
        n = labels.num_frames
        H, W = labels.frame_size
        dev = bridge.torch_device()
        progress = bridge.Progress(n)
        progress(0, n)
        out = torch.empty(n, H, W, dtype=torch.long)
        coarse = labels.labels  # full-resolution labels are simply re-filtered
        for s in range(0, n, CHUNK):
            e = min(n, s + CHUNK)
            ctx = UpsampleContext(progress=lambda d, t, _s=s: progress(_s + d, n), cancel=bridge.cancel_check)
            out[s:e] = up.upsample(frames[s:e].to(dev), coarse[s:e].to(dev), ids, ctx).cpu()
        progress(n, n)
        meta = {**labels.meta, "upsampler": "guided_filter"}
        return (dataclasses.replace(labels, labels=out, coarse=False, meta=meta),)


NODES = (VidSegGuidedUpsample,)
