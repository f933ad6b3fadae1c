"""Segment Video's run: an IMAGE batch or a core VIDEO in, outputs bounded in the video's length.

The pipeline (:class:`~vidseg_core.pipeline.VideoSegmenter`) consumes the frames batch by batch: a VIDEO is
decoded per batch (:mod:`.comfy_adapters.video`), never whole.  As each batch's label maps come out they are

* stored compactly (:class:`~vidseg_core.label_store.LabelStore`: uint8, spilled to ComfyUI's temp folder
  for long videos) -> the ``labels`` output (:class:`.stored_labels.StoredLabels`);
* blended into the overlay video and turned into the selected-mask video, both H.264 files written batch
  by batch (:class:`~vidseg_core.video_writer.H264Writer`) -> the VIDEO outputs.

The float outputs (``mask``, ``all_masks``, ``overlay``) are whole-video tensors; ``float_outputs`` says
which are made: ``auto`` = all of them for an IMAGE batch, none for a VIDEO.  Before allocating them their
size is compared with the available memory and the node refuses, with the fix, when they would not fit;
an output that is not made stops the nodes connected to it with the reason (:func:`.comfy_adapters.video.blocked`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch

from ..vidseg_core.errors import InputError
from ..vidseg_core.label_io import mark_cuts, overlay
from ..vidseg_core import label_store
from ..vidseg_core.label_store import LabelStore
from ..vidseg_core.memory_guard import check_fits, describe, float_output_bytes
from ..vidseg_core.naming.segmenter import NamingSegmenter
from ..vidseg_core.pipeline import SegmentSettings, VideoSegmenter
from ..vidseg_core.video_stream import DEFAULT_FPS
from ..vidseg_core.video_writer import H264Writer
from .comfy_adapters import bridge
from .comfy_adapters import video as comfy_video
from .assign_labels import MASK_NAMES
from .convert import parse_names, parse_selection, reference_from_label_image, reference_from_mask
from .segment_naming import naming_settings, namer_on_device, write_mask_video
from .stored_labels import StoredLabels

log = logging.getLogger("vidseg")

FLOAT_OUTPUTS = ("auto", "all", "mask", "off")
FLOAT_OUTPUTS_TOOLTIP = (
    "Which whole-video float outputs (mask, all_masks, overlay) are made: auto = all for an IMAGE batch, none "
    "for a VIDEO (use overlay_video / mask_video / labels); all; mask = the mask output only; off. They take "
    "4 bytes per pixel per frame (overlay 12, all_masks 4 per label): the node refuses, with the sizes, when "
    "they would not fit in memory.")
OVERLAY_VIDEO_TOOLTIP = ("The frames with the label colours blended in, as a VIDEO (H.264 mp4 written batch by batch "
                         "in ComfyUI's temp folder): connect Save Video to keep it.")
MASK_VIDEO_TOOLTIP = ("The mask output's labels as a black-and-white VIDEO (H.264, white = selected), written batch "
                      "by batch. Lossy: for exact masks use labels or mask.")
VIDEO_TOOLTIP = ("Or: a VIDEO (core Load Video / Trim Video), read batch by batch inside its trim window, so a "
                 "long video never sits in memory. Connect frames or video, not both.")

@dataclass
class SegmentRun:
    labels: StoredLabels
    mask: object
    all_masks: object
    overlay: object
    overlay_video: object
    mask_video: object
    summary: object
    chosen: List[int]
    notes: List[str] = field(default_factory=list)
    #: what naming found (``NamingSegmenter.naming``), None without a vocabulary
    naming: Optional[dict] = None


def run_segment(model, frames=None, video=None, num_clusters=20, mode="quality", seed=1, keep_model_loaded=False,
                reference_frame=0, mask_labels="", batch_size=14, refiner="cbr", reference_mask=None,
                reference_labels=None, label_names="", float_outputs="auto", kmeans="torch", vocabulary="",
                name_threshold=-1.0, clip=None, namer=None, shots=None) -> SegmentRun:
    """``shots``: a :class:`~vidseg_core.shots.ShotSettings` (None: the defaults, cuts auto)."""
    if float_outputs not in FLOAT_OUTPUTS:
        raise InputError(f"float_outputs {float_outputs!r} is not one of {', '.join(FLOAT_OUTPUTS)}.",
                         "Choose auto, all, mask or off.")
    source = comfy_video.frames_or_video(frames, video, "Segment Video")
    try:
        return _run(source, video is not None, model, int(num_clusters), mode, int(seed), keep_model_loaded,
                    int(reference_frame), mask_labels, int(batch_size), refiner, reference_mask, reference_labels,
                    label_names, float_outputs, kmeans, (vocabulary, name_threshold, clip, namer), shots)
    finally:
        source.close()


def _run(source, is_video, model, num_clusters, mode, seed, keep_model_loaded, reference_frame, mask_labels,
         batch_size, refiner, reference_mask, reference_labels, label_names, float_outputs, kmeans="torch",
         naming_inputs=("", -1.0, None, None), shots=None) -> SegmentRun:
    n, (H, W) = len(source), source.frame_size
    shots = _check_shots(shots, n, batch_size)
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
    vocabulary, name_threshold, clip, namer = naming_inputs
    naming = naming_settings(model, vocabulary, name_threshold, clip, namer)
    wanted = ("mask", "all_masks", "overlay") if float_outputs == "all" or (float_outputs == "auto" and not is_video) \
        else ("mask",) if float_outputs == "mask" else ()
    fix = ("Use the VIDEO outputs (overlay_video, mask_video) and the labels output, set float_outputs to 'mask' "
           "or 'off', or segment a shorter range (core Trim Video).")
    settings = SegmentSettings(num_clusters=num_clusters, batch_size=batch_size, mode=mode, refiner=refiner,
                               seed=seed, reference_mask=ref, reference_frame=reference_frame, names=names or None,
                               kmeans_impl=kmeans, shots=shots)
    if wanted:  # before any work, with the most labels the run can give (checked again with the real count)
        most = num_clusters if ref is None else len(set(np.unique(ref).tolist()) - set(settings.void_values))
        check_fits(float_output_bytes(n, H, W, max(1, most), wanted), "Segment Video's float outputs", fix)
    bar = bridge.Progress(100 * max(1, -(-n // batch_size)))
    bar(0)
    store = chosen = None
    fps = getattr(source, "fps", DEFAULT_FPS)
    over_w, mask_w = H264Writer(comfy_video.temp_video_path("overlay"), fps), H264Writer(comfy_video.temp_video_path("mask"), fps)
    try:
        with bridge.model_on_device(model, keep_model_loaded) as backbone, \
                namer_on_device(namer if naming is not None else None, keep_model_loaded):
            seg = VideoSegmenter(backbone, settings, bar.fraction, bridge.cancel_check) if naming is None else \
                NamingSegmenter(backbone, settings, bar.fraction, bridge.cancel_check, naming=naming)
            for res in seg.run(source.read, n, (H, W)):
                table = seg.table
                if store is None:
                    store = LabelStore(n, (H, W), max(table.values), label_store.DEFAULT_SPILL_BYTES,
                                       spill_dir=comfy_video.vidseg_temp_dir())
                    chosen = _chosen(mask_labels, table, naming is not None and ref is None)
                b = res.batch
                store.write(b.write_start, res.labels)
                over_w.write(mark_cuts(overlay(source.read(b.write_start, b.stop), res.labels, table, 0.5).clamp(0, 1),
                                       [c - b.write_start for c in res.cuts]))
                if chosen is not None:
                    mask_w.write(torch.isin(res.labels, torch.tensor(chosen, dtype=torch.long)).to(torch.uint8) * 255)
        if chosen is None:  # mask_labels names words: known only now
            chosen = _chosen(mask_labels, seg.summary.table)
            write_mask_video(mask_w, store, chosen, batch_size)
        over_path, mask_path = over_w.close(), mask_w.close()
    except BaseException:
        over_w.abort()
        mask_w.abort()
        if store is not None:
            store.delete()
        raise
    bar(bar.total)
    summary = seg.summary
    table = summary.table
    meta = {"batch_size": batch_size, "seed": seed, "backbone": summary.backbone, "mode": mode,
            "upsampler": "masked_modulation" if mode == "quality" else "guided_filter",
            "seconds": dict(summary.seconds), "input": "video" if is_video else "frames", "fps": float(fps)}
    labels = StoredLabels.from_store(store, table, (H, W), meta)
    out = SegmentRun(labels, None, None, None, comfy_video.video_output(over_path), comfy_video.video_output(mask_path), summary, chosen,
                     naming=getattr(seg, "naming", None))
    _float_outputs(out, source, store, table, wanted, float_outputs, fix, batch_size)
    return out


def _check_shots(shots, n: int, batch_size: int):
    """The shot settings (None: the defaults), checked against the video before the model is loaded."""
    from ..vidseg_core.shots import ShotSettings
    from .shot_inputs import check_video

    shots = shots if shots is not None else ShotSettings()
    check_video(shots, n, batch_size)
    return shots


def _chosen(mask_labels: str, table, names_later: bool = False) -> Optional[List[int]]:
    """The mask output's labels; None when ``names_later`` (naming) and a name is not in the table yet."""
    if str(mask_labels).strip():
        try:
            return parse_selection(mask_labels, table)
        except InputError:
            if names_later:
                return None
            raise
    return [v for v in table.values if v != 0]


def _float_outputs(out: SegmentRun, source, store: LabelStore, table, wanted, setting: str, fix: str,
                   chunk: int) -> None:
    """Fill ``mask`` / ``all_masks`` / ``overlay`` (those ``wanted``) ``chunk`` frames at a time; block the
    others."""
    n, (H, W) = len(source), source.frame_size
    values = list(table.values)
    every = ("mask", "all_masks", "overlay")
    sizes = float_output_bytes(n, H, W, len(values), every)
    made = {k: sizes[k] for k in wanted}
    if wanted:
        check_fits(made, "Segment Video's float outputs", fix)
        out.notes.append(f"float outputs: {describe(made)}")
        log.info("[VidSeg] Segment Video allocates its float outputs: %s", describe(made))
    off = [k for k in every if k not in wanted]
    if off:
        reason = (f"Segment Video's {', '.join(off)} output(s) are off (float_outputs = {setting}"
                  f"{', the input is a VIDEO' if setting == 'auto' else ''}); they would take "
                  f"{describe({k: sizes[k] for k in off})}.")
        out.notes.append(reason)
        for k in off:
            setattr(out, k, comfy_video.blocked(reason + " Set float_outputs to 'all' for a short clip, or use the VIDEO "
                                                "outputs (overlay_video, mask_video) or the labels output."))
    if not wanted:
        return
    mask = torch.empty(n, H, W) if "mask" in wanted else None
    masks = torch.empty(n * len(values), H, W) if "all_masks" in wanted else None
    over = torch.empty(n, H, W, 3) if "overlay" in wanted else None
    chosen = torch.tensor([v for v in out.chosen if v in values], dtype=torch.long)
    cuts = list((out.summary.shots or {}).get("cuts", []))
    for a, part in store.chunks(chunk):
        b = a + part.shape[0]
        part = part.long()
        if mask is not None:
            mask[a:b] = torch.isin(part, chosen).float()
        if masks is not None:
            for i, v in enumerate(values):
                masks[i * n + a:i * n + b] = (part == v).float()
        if over is not None:
            over[a:b] = mark_cuts(overlay(source.read(a, b), part, table, 0.5).clamp(0, 1), [c - a for c in cuts])
    for k, v in (("mask", mask), ("all_masks", masks), ("overlay", over)):
        if v is not None:
            setattr(out, k, bridge.outputs_device(v))
