"""The paper's protocol on one video of a dataset, and the worker that runs it (model loaded once).

Per video (docs/design/authors_code.md#label-assignment-and-the-scene-context-model, #evaluation-facing-facts):

* the video is segmented exactly as ``segment`` does it (:class:`~vidseg_core.pipeline.VideoSegmenter`
  with the same :class:`~vidseg_core.pipeline.SegmentSettings`), streaming batch by batch;
* the reference that names the clusters is the ground truth of the first selected frame that has an
  annotation (DAVIS: object ids; VSPW: class ids after the remap; void 255 never becomes a label); a clip
  without any annotation (plain folders) is labelled with cluster ids, as ``segment`` without a mask;
* predictions are indexed PNGs named like the frames (``DIR/<video>/<frame>.png``) at the frames' own
  size, the layout ``davis2017-evaluation`` and the VSPW scripts read;
* the video folder is verified and marked done atomically (:mod:`.progress`).

:class:`VideoWorker` is what an engine runs: the local engine makes one, Ray makes one actor per GPU or
CPU slice; both call :meth:`VideoWorker.run` per video, which never raises for a failing video (the error
is recorded and returned) so the run goes on.
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from ..errors import InputError
from ..run_inputs import load_reference, open_frames, reference_at_working_size
from .layouts import Video, transform_gt
from .progress import RunFolder


@dataclass
class JobConfig:
    """Everything a worker needs; plain data, so it can be sent to Ray workers."""

    out: str
    model: str
    device: str = "auto"
    precision: str = "auto"
    prediction_type: Optional[str] = None
    settings: object = None  # SegmentSettings without a reference
    frames: Optional[str] = None  # START:STOP per video
    stride: int = 1
    max_side: Optional[int] = None
    gt_transform: str = "none"
    #: torch threads of the worker (None = leave as is)
    threads: Optional[int] = None
    #: naming the regions (a :class:`~vidseg_core.naming.segmenter.NamingSettings` without its namer), or None
    naming: object = None
    #: the SD 2.1 checkpoint naming an SVD model's regions
    namer: Optional[str] = None

    def open_frames(self, path):
        """The frames of one video with this run's range, stride and size cap
        (:func:`~vidseg_core.run_inputs.open_frames`)."""
        return open_frames(path, self.frames, self.stride, self.max_side)


def find_reference(video: Video, names) -> Tuple[Optional[str], int]:
    """(path of the first selected frame's annotation, its index among the selected frames) or (None, 0)."""
    if video.reference_path is not None:  # a single mask of the clip's first frame
        return video.reference_path, 0
    if video.annotations is None:
        return None, 0
    ann = Path(video.annotations)
    for i, n in enumerate(names):
        p = ann / f"{n}.png"
        if p.is_file():
            return str(p), i
    raise InputError(f"None of the selected frames of video {video.name!r} has an annotation in {ann}.",
                     "Select frames that include the first annotated frame (see --frames).")


def input_fingerprint(source, ref_path: Optional[str]) -> str:
    """What a video's outputs depend on besides the settings: every selected frame
    (:meth:`~vidseg_core.video_io.FrameSource.fingerprint`) and the reference mask (size, modification time)."""
    ref = ""
    if ref_path is not None:
        st = Path(ref_path).stat()
        ref = f"{Path(ref_path).name}:{st.st_size}:{st.st_mtime_ns}"
    return f"{source.fingerprint()}/{ref}"


def current_fingerprint(video: Video, config: JobConfig) -> Optional[str]:
    """:func:`input_fingerprint` of ``video`` as it is now (None when it cannot be read: the run reports it)."""
    try:
        with config.open_frames(video.frames) as source:
            return input_fingerprint(source, find_reference(video, source.names)[0])
    except (InputError, OSError):
        return None


def load_video_reference(path: str, source, gt_transform: str):
    """The reference label mask at the working size, in the predictions' label space, and the labels that
    vanish at that size."""
    ref = transform_gt(load_reference(path, source.source_size), gt_transform)
    return reference_at_working_size(ref, source.frame_size)


def segment_video_into(backbone, video: Video, config: JobConfig, folder: RunFolder, naming=None) -> dict:
    """Segment ``video`` into ``partial/<video>``, verify and commit it; return its record.  ``naming``: the
    worker's naming settings with their namer (None: ``config.naming``)."""
    import torch

    from ..label_io import save_label_png
    from ..video_run import labels_at_size, make_segmenter, segment_streaming

    t0 = time.perf_counter()
    part = folder.reset(video.name)
    with config.open_frames(video.frames) as source:
        names = source.names
        ref_path, ref_index = find_reference(video, names)
        reference_mask, at_max_side = (None, []) if ref_path is None else \
            load_video_reference(ref_path, source, config.gt_transform)
        settings = dataclasses.replace(config.settings, reference_mask=reference_mask, reference_frame=ref_index)
        seg = make_segmenter(backbone, settings, None, naming if naming is not None else config.naming)
        size = tuple(source.source_size)

        def write(res):  # on the writer thread, while the next batch is computed
            labels = labels_at_size(res.labels, size)
            for i, f in enumerate(res.batch.written):
                save_label_png(part / f"{names[f]}.png", labels[i])

        segment_streaming(seg, source, lambda res: lambda: write(res))
        frames = len(source)
        fingerprint = input_fingerprint(source, ref_path)
    summary = seg.summary.to_dict()
    record = {
        "video": video.name, "status": "done", "frames": frames, "frame_names": names,
        "size": list(size), "reference": ref_path, "reference_frame": ref_index,
        "label_table": [e["value"] for e in summary["label_table"]["entries"]],
        "lost_labels": sorted(set(summary["lost_labels"]) | set(at_max_side)), "lost_at_grid": summary["lost_at_grid"],
        "lost_at_max_side": at_max_side, "seconds": round(time.perf_counter() - t0, 3),
        "stage_seconds": summary["seconds"], "peak_memory_mb": summary["peak_memory_mb"],
        "device": str(backbone.device), "torch_threads": torch.get_num_threads(), "input_fingerprint": fingerprint,
    }
    if getattr(seg, "naming", None) is not None:
        record["naming"] = seg.naming
    folder.commit(video.name, record, size)
    return record


class VideoWorker:
    """Loads the model once, then segments whole videos (one engine worker)."""

    def __init__(self, config: JobConfig):
        import os

        import torch

        from .. import run_inputs

        if config.threads:
            torch.set_num_threads(int(config.threads))
        self.config = config
        self.folder = RunFolder(config.out)
        self.backbone = run_inputs.load_model(config.model, config.device, config.precision, config.prediction_type)
        self.naming = None
        if config.naming is not None:  # this worker's copy of the naming settings, with its namer
            self.naming = dataclasses.replace(config.naming)
            run_inputs.load_namer(self.naming, self.backbone, config.namer, config.device, config.precision)
        self.pid = os.getpid()
        self.videos_run = 0

    def run(self, video: Video) -> dict:
        """The video's record; a failure is recorded (``status: failed``) instead of raised."""
        self.videos_run += 1
        try:
            rec = segment_video_into(self.backbone, video, self.config, self.folder, self.naming)
        except Exception as exc:  # one bad video (corrupt frame, missing mask, out of memory) must not stop the run
            msg = f"{type(exc).__name__}: {exc}"
            rec = self.folder.record_failure(video.name, msg)
            rec["traceback"] = traceback.format_exc(limit=4)
        rec["worker_pid"] = self.pid
        return rec
