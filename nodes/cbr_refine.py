"""CBR Refine (``VidSegCBRRefine``): the refiner of the scene-context loop (paper §4.2, Eqs 3-5)."""
from __future__ import annotations

import dataclasses

import torch

from ..vidseg_core.batching import plan_batches
from ..vidseg_core.cbr import START_ARITHMETIC
from ..vidseg_core.errors import InputError
from ..vidseg_core.refiners import CBRRefiner, NoRefiner
from ..vidseg_core.video_features import VideoFeatures
from .comfy_adapters import bridge
from .schema import Boolean, Combo, Float, Int, Node, Out, Socket
from .sockets import VIDSEG_FEATURES, VIDSEG_LABELS, VIDSEG_REFINER, require_labels

METHODS = ("cbr", "cbr_compat", "none")


def make_refiner(method: str, radius_sq: float = 2.0, jump_threshold: int = 1, signed: bool = True,
                 start_cells: str = "device"):
    if method == "cbr":
        return CBRRefiner(radius_sq=None if radius_sq <= 0 else float(radius_sq))
    if method == "cbr_compat":
        return CBRRefiner(compat=True, jump_threshold=int(jump_threshold), signed=bool(signed), start=start_cells)
    if method == "none":
        return NoRefiner()
    raise InputError(f"Unknown refinement method {method!r}.", f"Use one of {', '.join(METHODS)}.")


class VidSegCBRRefine:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegCBRRefine", "CBR Refine (VidSeg)", "VidSeg/stages",
            "Correspondence-based refinement (paper §4.2): each cell follows its best-matching cells (block-7 query "
            "similarity) through the rest of the batch and takes the majority label along the track. Outputs the "
            "refiner for KNN Context Model, where it refines every batch before the context model learns from it. "
            "With coarse labels and features connected it also refines those labels directly.",
            inputs=(
                Combo("method", METHODS, "cbr = the paper's Eqs 3-5; cbr_compat = the authors' published code (their "
                                         "quirks included); none = keep the KNN labels (ablation).", default="cbr"),
                Float("radius_sq", 2.0, 0.0, 64.0, 0.5, "cbr: squared search radius in feature cells (2 = 3x3, the "
                                                        "authors' 1-cell threshold); 0 = the whole frame.",
                      advanced=True),
                Int("jump_threshold", 1, 0, 64, "cbr_compat: a track is dropped when it jumps more cells than this "
                                                "between frames.", advanced=True),
                Boolean("signed", True, "cbr_compat: the authors' signed jump test (on) or the absolute one (off).",
                        advanced=True),
                Socket("coarse_labels", VIDSEG_LABELS, "Coarse labels to refine directly (optional).", optional=True),
                Socket("features", VIDSEG_FEATURES, "The features of the same video (needed with coarse_labels).",
                       optional=True),
                Combo("start_cells", START_ARITHMETIC, "cbr_compat: which cells start a track. device = as the "
                      "authors' code on the device the tracking runs on; cuda = as their GPU runs (their float32 "
                      "coordinate round trip skips a few rows/columns at some grid sizes); cpu = the same code on a "
                      "CPU (other skips); exact = every cell.", default="device",
                      optional=True, advanced=True),
            ),
            outputs=(
                Out("refiner", VIDSEG_REFINER, "The refinement step for KNN Context Model."),
                Out("refined_labels", VIDSEG_LABELS, "The optional coarse labels refined batch by batch (None when "
                                                     "they are not connected)."),
            ),
            function="build", search_aliases=("correspondence refinement", "cbr", "refine labels"))

    def build(self, method="cbr", radius_sq=2.0, jump_threshold=1, signed=True, coarse_labels=None, features=None,
              start_cells="device"):
        refiner = make_refiner(method, radius_sq, jump_threshold, signed, start_cells)
        if coarse_labels is None and features is None:
            return (refiner, None)
        if coarse_labels is None or features is None:
            raise InputError("Refining labels needs both coarse_labels and features.",
                             "Connect both, or neither (then only the refiner is output).")
        labels = require_labels(coarse_labels)
        if not isinstance(features, VideoFeatures):
            raise InputError(f"Expected VidSeg features, got {type(features).__name__}.",
                             "Connect the output of Extract Block Features.")
        if not labels.coarse or tuple(labels.labels.shape) != (features.num_frames,) + features.grid:
            raise InputError(f"The labels {tuple(labels.labels.shape)} are not coarse maps of these features "
                             f"({features.num_frames} frames, grid {features.grid}).",
                             "Connect the coarse labels from KNN Context Model and the features they came from.")
        n = labels.num_frames
        batch_size = int(labels.meta.get("batch_size") or features.meta.get("batch_size") or 14)
        batches = plan_batches(n, batch_size)
        progress = bridge.Progress(len(batches))
        out = torch.empty_like(labels.labels)
        for b in batches:
            progress(b.index, len(batches))
            ref = refiner.refine(labels.labels[b.start:b.stop], features.correspondence[b.start:b.stop].float())
            out[b.write_start:b.stop] = ref[b.write_offset:].cpu()
        progress(len(batches), len(batches))
        refined = dataclasses.replace(labels, labels=out, meta={**labels.meta, "refined_again": repr(refiner)})
        return (refiner, refined)


NODES = (VidSegCBRRefine,)
