"""Masked Modulation (``VidSegMaskedModulation``): coarse -> full-resolution labels (paper §4.3, Eqs 6-7)."""
from __future__ import annotations

import dataclasses

import torch

from ..vidseg_core.batching import plan_batches
from ..vidseg_core.errors import InputError
from ..vidseg_core.features import prepare_batch
from ..vidseg_core.modulation import ModulationSettings, modulate_batch
from .comfy_adapters import bridge
from .convert import image_batch
from .schema import Boolean, Combo, Float, Int, Node, Out, Socket
from .sockets import KEEP_MODEL_TOOLTIP, VIDSEG_LABELS, VIDSEG_MODEL, Labels, require, require_labels


def check_frames_match(frames: torch.Tensor, labels: Labels) -> None:
    t, h, w = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
    if t != labels.num_frames or (h, w) != tuple(labels.frame_size):
        fh, fw = labels.frame_size
        raise InputError(f"The frames ({t} of {w}x{h}) are not the frames the labels were computed from "
                         f"({labels.num_frames} of {fw}x{fh}).",
                         "Connect the same IMAGE batch that went into Extract Block Features.")


class VidSegMaskedModulation:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegMaskedModulation", "Masked Modulation (VidSeg)", "VidSeg/stages",
            "Full-resolution label maps by masked modulation (paper §4.3, the quality mode): per batch, every label's "
            "coarse mask is added to (and subtracted from) the attention of one decoder block at step t_m, the runs "
            "are decoded and each pixel takes the label whose modulation changed it most. Needs the same model, "
            "frames and seed as the features (taken from the labels). Runs 2 diffusion passes per label, batched.",
            inputs=(
                Socket("model", VIDSEG_MODEL, "The same backbone that extracted the features."),
                Socket("frames", "IMAGE", "The same video (IMAGE batch) that went into Extract Block Features."),
                Socket("coarse_labels", VIDSEG_LABELS, "Coarse labels from KNN Context Model (or CBR Refine)."),
                Float("lam", 50.0, 0.0, 1000.0, 1.0, "Modulation strength lambda of Eq 6 (authors: 50)."),
                Float("filter_s", 0.7, 0.0, 1.0, 0.05, "Difference-map filter factor s (authors: 0.7; 1 = off).",
                      advanced=True),
                Int("blur_kernel", 5, 0, 31, "Gaussian blur of the difference maps (odd size, sigma 3; 0 = off).",
                    advanced=True),
                Combo("compat", ("none", "wrap", "wrap+jpeg"),
                      "none = fixed difference maps; wrap / wrap+jpeg reproduce the authors' uint8 wrap-around (and "
                      "JPEG round trip) exactly.", default="none", advanced=True),
                Combo("absent_labels", ("keep", "skip"), "Labels absent from a frame's coarse map: keep = they still "
                                                         "compete (authors), skip = not.", default="keep",
                      advanced=True),
                Int("max_runs_per_chunk", 0, 0, 1024, "Runs per batched UNet call (0 = from free memory; lower it if "
                                                      "you run out of VRAM).", advanced=True),
                Boolean("keep_model_loaded", False, KEEP_MODEL_TOOLTIP),
            ),
            outputs=(Out("labels", VIDSEG_LABELS, "Label maps [T, H, W] at the frames' resolution, with the label "
                                                  "table."),),
            function="modulate", search_aliases=("upsample labels", "full resolution labels", "quality upsample"))

    def modulate(self, model, frames, coarse_labels, lam=50.0, filter_s=0.7, blur_kernel=5, compat="none",
                 absent_labels="keep", max_runs_per_chunk=0, keep_model_loaded=False):
        labels = require_labels(require(coarse_labels, "coarse_labels", "Connect KNN Context Model."))
        if not labels.coarse:
            raise InputError("These labels are already at full resolution.",
                             "Connect the coarse labels from KNN Context Model.")
        frames = image_batch(frames)
        check_frames_match(frames, labels)
        settings = ModulationSettings(lam=float(lam), filter_s=float(filter_s), blur_kernel=int(blur_kernel),
                                      compat=compat, absent_labels=absent_labels,
                                      max_runs_per_chunk=int(max_runs_per_chunk) or None)
        n = labels.num_frames
        H, W = labels.frame_size
        seed = labels.meta.get("seed")
        batches = plan_batches(n, int(labels.meta.get("batch_size") or 14))
        ids = labels.table.values
        progress = bridge.Progress(len(batches) * 2 * len(ids))  # one unit per modulated run
        progress(0)
        out = torch.empty(n, H, W, dtype=torch.long)
        with bridge.model_on_device(model, keep_model_loaded) as backbone:
            for b in batches:
                report = progress.sub(b.index, len(batches))
                report(0, 1)
                inputs = prepare_batch(backbone, frames[b.start:b.stop], seed)
                res = modulate_batch(backbone, inputs, labels.labels[b.start:b.stop], ids, (H, W), settings,
                                     report, bridge.cancel_check)
                out[b.write_start:b.stop] = res.labels[b.write_offset:].cpu()
                del inputs, res
                report(1, 1)
        meta = {**labels.meta, "upsampler": "masked_modulation", "lam": lam, "filter_s": filter_s, "compat": compat}
        return (dataclasses.replace(labels, labels=out, coarse=False, meta=meta),)


NODES = (VidSegMaskedModulation,)
