"""Label maps -> core MASK batches: one selection (``VidSegSelectLabels``) or every label (``VidSegAllLabelMasks``).

Every mask output has exactly one mask per input frame at the input resolution
(coarse labels are resized nearest-neighbour), never an empty batch.
"""
from __future__ import annotations

import torch

from .comfy_adapters import bridge
from .convert import labels_to_masks, parse_selection, table_lines
from .schema import Boolean, Node, Out, Socket, String
from .sockets import VIDSEG_LABELS, require_labels


class VidSegSelectLabels:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegSelectLabels", "Select Labels as Mask (VidSeg)", "VidSeg/masks",
            "A MASK [T, H, W] of the chosen labels (one mask per frame at the frames' resolution), ready for Grow "
            "Mask, Set Latent Noise Mask, VAE Encode (for Inpainting) or a mask video. An empty selection gives empty "
            "masks.",
            inputs=(
                Socket("labels", VIDSEG_LABELS, "Label maps (full resolution or coarse)."),
                String("select", "1", "Label values or names, comma separated (e.g. '1' or 'swan, 3'); a name "
                                      "shared by several labels (words of a vocabulary) selects all of them. With "
                                      "a MASK reference, 1 is the object and 0 the background.", multiline=False),
                Boolean("invert", False, "Select everything except these labels."),
            ),
            outputs=(Out("mask", "MASK", "1 where the pixel has one of the selected labels, one mask per frame."),),
            function="select", search_aliases=("labels to mask", "mask from labels", "segmentation mask"))

    def select(self, labels, select="1", invert=False):
        labels = require_labels(labels)
        values = parse_selection(select, labels.table)
        mask = labels_to_masks(labels.full_resolution(), values)
        if invert:
            mask = 1.0 - mask
        return (bridge.outputs_device(mask),)


class VidSegAllLabelMasks:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegAllLabelMasks", "All Labels as Masks (VidSeg)", "VidSeg/masks",
            "Every label as its own mask video, stacked label after label: a MASK batch [T * L, H, W] where masks "
            "l*T .. l*T+T-1 belong to the l-th label of the list (ascending label values).",
            inputs=(Socket("labels", VIDSEG_LABELS, "Label maps (full resolution or coarse)."),),
            outputs=(
                Out("masks", "MASK", "MASK batch [T * L, H, W], label-major (all frames of the first label, then the "
                                     "next ...)."),
                Out("label_count", "INT", "L, the number of labels."),
                Out("label_list", "STRING", "One line per label in batch order: 'value: name  rgb(r, g, b)', "
                                          "plus '  score 0.xxx' when a vocabulary named the label."),
            ),
            function="split", search_aliases=("masks per label", "split labels"))

    def split(self, labels):
        labels = require_labels(labels)
        full = labels.full_resolution()
        values = labels.table.values
        masks = torch.cat([labels_to_masks(full, [v]) for v in values], 0) if values else \
            torch.zeros((full.shape[0],) + tuple(full.shape[1:]))
        return (bridge.outputs_device(masks), len(values), table_lines(labels.table))


NODES = (VidSegSelectLabels, VidSegAllLabelMasks)
