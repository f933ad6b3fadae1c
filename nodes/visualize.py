"""Colour label maps and overlays (``VidSegColorizeLabels``), stable across the whole video."""
from __future__ import annotations

from ..vidseg_core.errors import InputError
from ..vidseg_core.label_io import colorize, overlay
from ..vidseg_core.legend import add_legend
from .comfy_adapters import bridge
from .convert import image_batch
from .schema import Boolean, Float, Node, Out, Socket
from .sockets import VIDSEG_LABELS, require_labels


class VidSegColorizeLabels:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegColorizeLabels", "Colorize Labels (VidSeg)", "VidSeg/visualize",
            "Draws the label maps in the label table's colours (DAVIS / VOC palette by label value, so a label has the "
            "same colour in every frame and every run) and blends them over the frames.",
            inputs=(
                Socket("labels", VIDSEG_LABELS, "Label maps (full resolution or coarse)."),
                Float("alpha", 0.5, 0.0, 1.0, 0.05, "Opacity of the label colours in the overlay."),
                Socket("frames", "IMAGE", "The video the labels belong to, for the overlay.", optional=True),
                Boolean("legend", False, "Draw a legend on the overlay: a box in the top-left corner with each "
                                         "named label's colour and name (names from a reference or a vocabulary; "
                                         "numbered clusters are left out).", optional=True),
            ),
            outputs=(
                Out("color_labels", "IMAGE", "Colour label image per frame [T, H, W, 3]."),
                Out("overlay", "IMAGE", "The frames with the label colours blended in (the colour image when no "
                                        "frames are given)."),
            ),
            function="draw", search_aliases=("label overlay", "segmentation overlay", "color labels"))

    def draw(self, labels, alpha=0.5, frames=None, legend=False):
        labels = require_labels(labels)
        full = labels.full_resolution()
        colors = colorize(full, labels.table).float() / 255.0
        if frames is None:
            over = colors
        else:
            frames = image_batch(frames)
            if tuple(frames.shape[:3]) != tuple(full.shape):
                raise InputError(f"The frames {tuple(frames.shape[:3])} and the labels {tuple(full.shape)} "
                                 "(frames, height, width) differ.",
                                 "Connect the video the labels were computed from.")
            over = overlay(frames, full, labels.table, float(alpha))
        over = over.clamp(0, 1)
        if legend:
            over = add_legend(over, labels.table)
        return (bridge.outputs_device(colors), bridge.outputs_device(over))


NODES = (VidSegColorizeLabels,)
