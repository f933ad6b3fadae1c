"""Save Label Maps (``VidSegSaveLabelMaps``): palettised PNG sequence in ComfyUI's output folder."""
from __future__ import annotations

import json
import os
import re

from ..vidseg_core.errors import InputError
from ..vidseg_core.label_io import save_label_png
from .comfy_adapters import bridge
from .schema import Node, Socket, String
from .sockets import VIDSEG_LABELS, require_labels
from .stored_labels import label_chunks, label_range


def output_target(output_dir: str, prefix: str):
    """(folder, base name, subfolder relative to the output dir) for ``prefix`` like ``vidseg/labels``."""
    prefix = (prefix or "").strip().replace("\\", "/") or "vidseg/labels"
    sub, base = os.path.split(prefix)
    folder = os.path.abspath(os.path.join(output_dir, sub))
    root = os.path.abspath(output_dir)
    if os.path.commonpath([folder, root]) != root or not base or base in (".", ".."):
        raise InputError(f"The filename prefix {prefix!r} points outside ComfyUI's output folder.",
                         "Use a relative prefix such as 'vidseg/labels'.")
    rel = os.path.relpath(folder, root)
    return folder, base, "" if rel == "." else rel.replace(os.sep, "/")


def next_counter(folder: str, base: str) -> int:
    """1 + the highest run counter of ``<base>_<counter>_...`` files in ``folder`` (1 if none)."""
    pat = re.compile(re.escape(base) + r"_(\d{5})_")
    top = 0
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            m = pat.match(name)
            if m:
                top = max(top, int(m.group(1)))
    return top + 1


class VidSegSaveLabelMaps:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegSaveLabelMaps", "Save Label Maps (VidSeg)", "VidSeg/io",
            "Writes one palettised PNG per frame (pixel value = label value, DAVIS / VOC palette colours) plus a JSON "
            "label table into ComfyUI's output folder as <prefix>_<run>_<frame>.png. Every run gets a new run number; "
            "existing files are never overwritten.",
            inputs=(
                Socket("labels", VIDSEG_LABELS, "Label maps to save (coarse maps are saved at frame size)."),
                String("filename_prefix", "vidseg/labels",
                       "Sub-folder and file name prefix inside ComfyUI's output folder."),
            ),
            outputs=(), function="save", output_node=True,
            search_aliases=("save segmentation", "export label maps", "save masks png"))

    @classmethod
    def validate_inputs(cls, filename_prefix="vidseg/labels"):
        """Reject a prefix outside the output folder before anything runs."""
        try:
            output_target("/output", filename_prefix)
        except InputError as exc:
            return str(exc)
        return True

    def save(self, labels, filename_prefix="vidseg/labels"):
        labels = require_labels(labels)
        n = labels.num_frames
        lo, hi = label_range(labels)
        if lo < 0 or hi > 255:
            raise InputError("Label values above 255 do not fit a palettised PNG.", "Use at most 255 clusters.")
        folder, base, subfolder = output_target(bridge.output_directory(), filename_prefix)
        os.makedirs(folder, exist_ok=True)
        counter = next_counter(folder, base)

        def names(c):
            return [f"{base}_{c:05d}_{i:05d}.png" for i in range(n)] + [f"{base}_{c:05d}_labels.json"]

        while any(os.path.exists(os.path.join(folder, n)) for n in names(counter)):
            counter += 1
        files = names(counter)
        progress = bridge.Progress(n)
        results = []
        for start, part in label_chunks(labels):  # a range of frames at a time (long videos: read from disk)
            for i in range(part.shape[0]):
                progress(start + i, n)
                name = files[start + i]
                save_label_png(os.path.join(folder, name), part[i])
                results.append({"filename": name, "subfolder": subfolder, "type": "output"})
        progress(n, n)
        info = {"label_table": labels.table.to_dict(), "frames": int(n),
                "frame_size": list(labels.frame_size), "upsampled_from_coarse": bool(labels.coarse),
                "meta": {k: v for k, v in labels.meta.items() if isinstance(v, (int, float, str, bool, list, tuple))}}
        with open(os.path.join(folder, files[-1]), "x") as f:
            json.dump(info, f, indent=2)
        return {"ui": {"images": results}, "result": ()}


NODES = (VidSegSaveLabelMaps,)
