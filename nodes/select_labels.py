"""Label maps -> core MASK batches: one selection (``VidSegSelectLabels``) or every label (``VidSegAllLabelMasks``).

Every mask output has exactly one mask per input frame at the input resolution
(coarse labels are resized nearest-neighbour), never an empty batch.
"""
from __future__ import annotations

import torch

from . import comfy_bridge as cb
from .convert import labels_to_masks, parse_selection, table_lines
from .sockets import VIDSEG_LABELS, require_labels


class VidSegSelectLabels:
    DESCRIPTION = (
        "A MASK [T, H, W] of the chosen labels (one mask per frame at the frames' resolution), ready for Grow Mask, "
        "Set Latent Noise Mask, VAE Encode (for Inpainting) or a mask video. An empty selection gives empty masks.")
    CATEGORY = "VidSeg/masks"
    FUNCTION = "select"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("1 where the pixel has one of the selected labels, one mask per frame.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "labels": (VIDSEG_LABELS, {"tooltip": "Label maps (full resolution or coarse)."}),
            "select": ("STRING", {"default": "1", "multiline": False,
                                  "tooltip": "Label values or names, comma separated (e.g. '1' or 'swan, 3'). With a "
                                             "MASK reference, 1 is the object and 0 the background."}),
            "invert": ("BOOLEAN", {"default": False, "tooltip": "Select everything except these labels."}),
        }}

    def select(self, labels, select="1", invert=False):
        labels = require_labels(labels)
        values = parse_selection(select, labels.table)
        mask = labels_to_masks(labels.full_resolution(), values)
        if invert:
            mask = 1.0 - mask
        return (cb.outputs_device(mask),)


class VidSegAllLabelMasks:
    DESCRIPTION = (
        "Every label as its own mask video, stacked label after label: a MASK batch [T * L, H, W] where masks "
        "l*T .. l*T+T-1 belong to the l-th label of the list (ascending label values).")
    CATEGORY = "VidSeg/masks"
    FUNCTION = "split"
    RETURN_TYPES = ("MASK", "INT", "STRING")
    RETURN_NAMES = ("masks", "label_count", "label_list")
    OUTPUT_TOOLTIPS = ("MASK batch [T * L, H, W], label-major (all frames of the first label, then the next ...).",
                       "L, the number of labels.",
                       "One line per label in batch order: 'value: name  rgb(r, g, b)'.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "labels": (VIDSEG_LABELS, {"tooltip": "Label maps (full resolution or coarse)."}),
        }}

    def split(self, labels):
        labels = require_labels(labels)
        full = labels.full_resolution()
        values = labels.table.values
        masks = torch.cat([labels_to_masks(full, [v]) for v in values], 0) if values else \
            torch.zeros((full.shape[0],) + tuple(full.shape[1:]))
        return (cb.outputs_device(masks), len(values), table_lines(labels.table))


NODE_CLASS_MAPPINGS = {"VidSegSelectLabels": VidSegSelectLabels, "VidSegAllLabelMasks": VidSegAllLabelMasks}
NODE_DISPLAY_NAME_MAPPINGS = {"VidSegSelectLabels": "Select Labels as Mask (VidSeg)",
                              "VidSegAllLabelMasks": "All Labels as Masks (VidSeg)"}
