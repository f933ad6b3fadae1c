"""Segment Video (``VidSegSegmentVideo``): the whole method in one box with the authors' defaults.

Runs :class:`vidseg_core.pipeline.VideoSegmenter` batch by batch (features,
KMeans init on the reference batch, KNN context model + CBR, masked modulation
or the guided-filter fast mode), sharing one noisy latent per batch between the
feature pass and the modulation.
"""
from __future__ import annotations

import torch

from ..vidseg_core.errors import InputError
from ..vidseg_core.label_io import overlay
from ..vidseg_core.pipeline import MODES, SegmentSettings, segment_video
from . import comfy_bridge as cb
from .assign_labels import MASK_NAMES
from .cbr_refine import METHODS
from .convert import (image_batch, labels_to_masks, parse_names, parse_selection, reference_from_label_image,
                      reference_from_mask)
from .schema import Boolean, Combo, Int, Node, Out, Socket, String
from .sockets import KEEP_MODEL_TOOLTIP, MODEL_TOOLTIP, VIDSEG_LABELS, VIDSEG_MODEL, Labels


class VidSegSegmentVideo:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegSegmentVideo", "Segment Video (VidSeg)", "VidSeg",
            "Zero-shot video segmentation in one node (the paper's full method with the authors' defaults): "
            "diffusion features per batch of 14 frames, KMeans on the reference batch, a KNN scene context model "
            "refined by CBR batch after batch, then masked modulation (quality) or a guided filter (fast) to full "
            "resolution. Connect a mask painted on one frame to track that object; without it the regions are "
            "unnamed clusters.",
            inputs=(
                Socket("model", VIDSEG_MODEL, MODEL_TOOLTIP),
                Socket("frames", "IMAGE", "The video as an IMAGE batch [T,H,W,3] (sides >= 64 px; they are processed "
                                          "at the size rounded down to multiples of 64)."),
                Int("num_clusters", 20, 1, 255, "K of the KMeans initialisation (paper: 20; the authors' demo: 5)."),
                Combo("mode", MODES, "quality = masked modulation (paper, 2 diffusion passes per label); fast = guided "
                                     "filter (no extra passes).", default="quality"),
                Int("seed", 1, 0, 0xFFFFFFFF, "Per-batch seed (authors: 1).", control_after_generate=False),
                Boolean("keep_model_loaded", False, KEEP_MODEL_TOOLTIP),
                Int("reference_frame", 0, 0, 100000, "Frame the reference mask / label image belongs to."),
                String("mask_labels", "", "Labels for the mask output, e.g. '1' or 'swan, 3'; empty = every label "
                                          "except 0."),
                Int("batch_size", 14, 1, 64, "Frames per batch B (paper: 14).", advanced=True),
                Combo("refiner", METHODS, "cbr = paper, cbr_compat = the authors' code, none = KNN only.",
                      default="cbr", advanced=True),
                Socket("reference_mask", "MASK", "Mask painted on the reference frame (>= 0.5 = object), e.g. from "
                                                 "Load Image's mask editor.", optional=True),
                Socket("reference_labels", "IMAGE", "Or: a label map image of the reference frame (palette colours "
                                                    "or grey ids).", optional=True),
                String("label_names", "", "Optional names, e.g. '1: swan, 0: water'.", optional=True),
                Combo("kmeans", ("torch", "sklearn"), "KMeans implementation: torch (GPU-capable, its own k-means++ "
                      "draws) or sklearn (scikit-learn seeded with seed: the authors' exact clustering).",
                      default="torch", optional=True, advanced=True),
            ),
            outputs=(
                Out("labels", VIDSEG_LABELS, "Label maps [T, H, W] with the label table (for Select Labels, "
                                             "Colorize, Save, Evaluate)."),
                Out("mask", "MASK", "MASK [T, H, W] of the labels chosen by mask_labels (default: every label except "
                                    "0, i.e. the painted object when a reference mask is connected)."),
                Out("all_masks", "MASK", "Every label as a mask video, label after label: MASK [T * L, H, W]."),
                Out("overlay", "IMAGE", "The frames with the label colours blended in [T, H, W, 3]."),
                Out("info", "STRING", "Labels, timings and warnings of the run."),
            ),
            function="segment",
            search_aliases=("video segmentation", "video object segmentation", "track object", "mask propagation",
                            "zero-shot segmentation"))

    def segment(self, model, frames, num_clusters=20, mode="quality", seed=1, keep_model_loaded=False,
                reference_frame=0, mask_labels="", batch_size=14, refiner="cbr", reference_mask=None,
                reference_labels=None, label_names="", kmeans="torch"):
        frames = image_batch(frames)
        n, H, W = (int(v) for v in frames.shape[:3])
        if not 0 <= reference_frame < n:
            raise InputError(f"reference_frame {reference_frame} is outside the video's {n} frames.",
                             f"Use an index in 0..{n - 1}.")
        if reference_mask is not None and reference_labels is not None:
            raise InputError("Both a reference mask and a reference label image are connected.",
                             "Connect only one of them.")
        names, ref = {}, None
        if reference_mask is not None:
            ref, names = reference_from_mask(reference_mask, reference_frame), dict(MASK_NAMES)
        elif reference_labels is not None:
            ref = reference_from_label_image(reference_labels, reference_frame)
        names.update(parse_names(label_names))
        settings = SegmentSettings(num_clusters=int(num_clusters), batch_size=int(batch_size), mode=mode,
                                   refiner=refiner, seed=int(seed), reference=ref, reference_frame=int(reference_frame),
                                   names=names or None, kmeans_impl=kmeans)
        bar = cb.Progress(100 * max(1, -(-n // int(batch_size))))
        bar(0)
        with cb.model_on_device(model, keep_model_loaded) as bb:
            labels, summary = segment_video(bb, frames, settings, progress=bar.fraction, cancel=cb.cancel_check)
        bar(bar.total)
        table = summary.table
        meta = {"batch_size": int(batch_size), "seed": int(seed), "backbone": summary.backbone, "mode": mode,
                "upsampler": "masked_modulation" if mode == "quality" else "guided_filter",
                "seconds": dict(summary.seconds)}
        result = Labels(labels, table, (H, W), False, meta)
        if str(mask_labels).strip():
            chosen = parse_selection(mask_labels, table)
        else:
            chosen = [v for v in table.values if v != 0]
        mask = labels_to_masks(labels, chosen)
        all_masks = torch.cat([labels_to_masks(labels, [v]) for v in table.values], 0)
        over = overlay(frames, labels, table, 0.5).clamp(0, 1)
        info = self.describe(summary, chosen)
        return (result, cb.outputs_device(mask), cb.outputs_device(all_masks), cb.outputs_device(over), info)

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


NODES = (VidSegSegmentVideo,)
