"""Segment Video (``VidSegSegmentVideo``): the whole method in one box with the authors' defaults.

Runs :class:`vidseg_core.pipeline.VideoSegmenter` batch by batch (features,
KMeans init on the reference batch, KNN context model + CBR, masked modulation
or the guided-filter fast mode), sharing one noisy latent per batch between the
feature pass and the modulation.
"""
from __future__ import annotations

from ..vidseg_core.pipeline import MODES
from .cbr_refine import METHODS
from .comfy_adapters.video import VIDEO
from .schema import Boolean, Combo, Float, Int, Node, Out, Socket, String
from .segment_run import (FLOAT_OUTPUTS, FLOAT_OUTPUTS_TOOLTIP, MASK_VIDEO_TOOLTIP, OVERLAY_VIDEO_TOOLTIP,
                          VIDEO_TOOLTIP, run_segment)
from .segment_naming import CLIP_TOOLTIP, NAME_THRESHOLD_TOOLTIP, NAMER_TOOLTIP, VOCABULARY_TOOLTIP, describe_naming
from .shot_inputs import DEFAULT_SHOTS, cut_inputs, describe_shots, shot_settings, shots_value
from .sockets import KEEP_MODEL_TOOLTIP, MODEL_TOOLTIP, VIDSEG_LABELS, VIDSEG_MODEL, VIDSEG_SHOTS


class VidSegSegmentVideo:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegSegmentVideo", "Segment Video (VidSeg)", "VidSeg",
            "Zero-shot video segmentation in one node (the paper's full method with the authors' defaults): "
            "diffusion features per batch of 14 frames, KMeans on the reference batch, a KNN scene context model "
            "refined by CBR batch after batch, then masked modulation (quality) or a guided filter (fast) to full "
            "resolution. Connect a mask painted on one frame to track that object; without it the regions are "
            "unnamed clusters. An edited video is first cut into shots (cuts); a scene that comes back gets its "
            "labels back, and the overlay marks each cut with a white border.",
            inputs=(
                Socket("model", VIDSEG_MODEL, MODEL_TOOLTIP),
                Socket("frames", "IMAGE", "The video as an IMAGE batch [T,H,W,3] (or connect video instead; sides "
                                          ">= 64 px; they are processed at the size rounded down to multiples of 64).",
                       optional=True),
                Socket("video", VIDEO, VIDEO_TOOLTIP, optional=True),
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
                Combo("float_outputs", FLOAT_OUTPUTS, FLOAT_OUTPUTS_TOOLTIP, default="auto", optional=True),
                String("vocabulary", "", VOCABULARY_TOOLTIP, optional=True, multiline=True),
                Float("name_threshold", -1.0, -1.0, 1.0, 0.01, NAME_THRESHOLD_TOOLTIP, optional=True),
                Socket("clip", "CLIP", CLIP_TOOLTIP, optional=True),
                Socket("namer", VIDSEG_MODEL, NAMER_TOOLTIP, optional=True),
            ) + cut_inputs(),
            outputs=(
                Out("labels", VIDSEG_LABELS, "Label maps [T, H, W] with the label table (for Select Labels, "
                                             "Colorize, Save, Evaluate)."),
                Out("mask", "MASK", "MASK [T, H, W] of the labels chosen by mask_labels (default: every label except "
                                    "0, i.e. the painted object when a reference mask is connected)."),
                Out("all_masks", "MASK", "Every label as a mask video, label after label: MASK [T * L, H, W]."),
                Out("overlay", "IMAGE", "The frames with the label colours blended in [T, H, W, 3]."),
                Out("info", "STRING", "Labels, timings and warnings of the run."),
                Out("overlay_video", VIDEO, OVERLAY_VIDEO_TOOLTIP),
                Out("mask_video", VIDEO, MASK_VIDEO_TOOLTIP),
                Out("shots", VIDSEG_SHOTS, "The shots of the video: cuts found (or given) and where, each shot's "
                                           "frames and label links, the shots each label appears in (a dict; "
                                           "for KMeans Init and KNN Context Model)."),
            ),
            function="segment",
            search_aliases=("video segmentation", "video object segmentation", "track object", "mask propagation",
                            "zero-shot segmentation"))

    def segment(self, model, frames=None, num_clusters=20, mode="quality", seed=1, keep_model_loaded=False,
                reference_frame=0, mask_labels="", batch_size=14, refiner="cbr", reference_mask=None,
                reference_labels=None, label_names="", kmeans="torch", video=None, float_outputs="auto",
                vocabulary="", name_threshold=-1.0, clip=None, namer=None,
                cuts="auto", cut_frames="", link_threshold=DEFAULT_SHOTS.link_threshold, seam_overlap=0):
        shots = shot_settings(cuts, cut_frames, link_threshold, seam_overlap)
        run = run_segment(model, frames, video, num_clusters, mode, seed, keep_model_loaded, reference_frame,
                          mask_labels, batch_size, refiner, reference_mask, reference_labels, label_names,
                          float_outputs, kmeans, vocabulary, name_threshold, clip, namer, shots=shots)
        info = "\n".join([self.describe(run.summary, run.chosen), describe_shots(run.summary.shots)]
                         + describe_naming(run.naming) + run.notes)
        out_shots = shots_value(run.summary.shots, run.summary.num_frames, shots)
        return (run.labels, run.mask, run.all_masks, run.overlay, info, run.overlay_video, run.mask_video, out_shots)

    @staticmethod
    def describe(summary, chosen) -> str:
        d = summary.to_dict()
        lines = [f"{summary.num_frames} frames {summary.frame_size[1]}x{summary.frame_size[0]} with {summary.backbone} "
                 f"({d['settings']['mode']}), {len(summary.table)} labels: "
                 + ", ".join(f"{e.value} ({e.name}{'' if e.score is None else f' {e.score:.3f}'})"
                             for e in summary.table),
                 f"mask output = labels {chosen}",
                 "seconds: " + ", ".join(f"{k} {v}" for k, v in d["seconds"].items())
                 + f" ({d['seconds_per_frame']} s/frame)"]
        if summary.lost_labels:
            lines.append(f"reference labels lost (no KMeans cluster won them; raise num_clusters): "
                         f"{summary.lost_labels}")
        return "\n".join(lines)


NODES = (VidSegSegmentVideo,)
