"""The whole method on a video, batch by batch (paper Fig. 3).

The video is first cut into shots (cut detection on the frames, or the user's cuts:
:mod:`vidseg_core.shots`); batches follow the shots (``plan_shot_batches``: a batch never spans a cut).
At each shot's first batch the scene context model is anchored: the reference frame's shot as in the
paper, every other shot by KMeans afresh linked to the labels seen so far (:mod:`vidseg_core.shot_context`,
:mod:`vidseg_core.label_bank`).  Without a cut this is the paper's single-shot loop, step for step.
For every batch of B frames:

1. prepare the batch once: resize, VAE-encode, condition, noise to t_m
   (:func:`~vidseg_core.features.prepare_batch`);
2. the reference trajectory gives the features (§4.1); in quality mode the
   same trajectory also records the reference q/k and latents the modulation
   injects (:func:`~vidseg_core.modulation.reference.reference_pass`), so it is
   computed once per batch;
3. the scene context model labels the batch with the KNN fit on the previous
   batch, the refiner (CBR, §4.2) corrects it, and the refined labels update
   the context model (§4.1, autoregressive);
4. the upsampler turns the coarse maps into full-resolution label maps:
   masked modulation (quality, §4.3) from the *same* noisy latents, or the
   guided filter (fast);
5. the batch's new frames are handed to ``on_batch`` and dropped.

Memory is bounded by one batch: frames are read per batch, features and label
maps of earlier batches are not kept unless the caller keeps them.
"""
from __future__ import annotations

import contextlib
import resource
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from .backbones.base import Backbone
from .batching import Batch
from .errors import InputError
from .features import capture_features, prepare_batch
from .kmeans import KMEANS_IMPLS
from .labels import DEFAULT_VOID, LabelTable, prepare_reference
from .modulation import ModulationSettings
from .refiners import get_refiner
from .shot_context import ShotContext
from .shots import ShotSettings, plan_shot_batches, resolve_shots
from .upsample import UpsampleContext, make_upsampler
from .validation import check_batch_size, check_int, check_seed

MODES = ("quality", "fast")

#: progress(done_units, total_units, stage) — may raise to cancel (ComfyUI's interrupt)
Progress = Callable[[int, int, str], None]


@dataclass
class SegmentSettings:
    """Settings of a whole run; defaults are the paper's / authors' (docs/design/authors_code.md#effective-settings)."""

    #: K clusters of the KMeans initialisation (authors: 20 for VSPW, 5 in their demo)
    num_clusters: int = 20
    #: frames per batch B (None = the backbone's, 14)
    batch_size: Optional[int] = None
    #: "quality" (masked modulation) or "fast" (guided filter, no extra diffusion passes)
    mode: str = "quality"
    #: "cbr" (paper Eqs 3-5), "cbr_compat" (the authors' code), "none"
    refiner: str = "cbr"
    #: per-batch seed (None = the backbone's, 1)
    seed: Optional[int] = None
    #: label mask [H,W] of frame ``reference_frame`` naming the clusters (None = cluster ids)
    reference_mask: Optional[np.ndarray] = None
    reference_frame: int = 0
    names: Optional[Dict[int, str]] = None
    void_values: Tuple[int, ...] = DEFAULT_VOID
    n_init: int = 10
    #: "torch" (GPU-capable, its own k-means++ draws) or "sklearn" (with the per-batch seed 1: the authors' exact
    #: clustering of the same features)
    kmeans_impl: str = "torch"
    modulation: ModulationSettings = field(default_factory=ModulationSettings)
    guided: Dict[str, object] = field(default_factory=dict)
    #: edited videos: cut detection, batches per shot, labels linked across shots (see vidseg_core.shots)
    shots: ShotSettings = field(default_factory=ShotSettings)

    def check(self) -> None:
        """Every option that can be checked without a model; a bad one raises :class:`InputError`."""
        check_int("num_clusters", self.num_clusters, 1, 255, "The paper uses K = 20 (labels are stored as 0..255).")
        check_batch_size(self.batch_size)
        check_seed(self.seed)
        if self.mode not in MODES:
            raise InputError(f"Unknown mode {self.mode!r}.", "Use 'quality' or 'fast'.")
        get_refiner(self.refiner)
        check_int("reference_frame", self.reference_frame, 0, None, "Use the index of the annotated frame (0 = first).")
        check_int("n_init", self.n_init, 1, None, "Use the authors' n_init = 10.")
        if self.kmeans_impl not in KMEANS_IMPLS:
            raise InputError(f"Unknown KMeans implementation {self.kmeans_impl!r}.",
                             f"Use one of {', '.join(KMEANS_IMPLS)}.")
        for v in self.void_values:
            check_int("void value", v, 0, 255, "Void values are label ids 0..255 (DAVIS / VSPW use 255).")
        self.shots.check()
        overlap = self.shots.overlap
        if overlap and self.batch_size is not None and overlap >= self.batch_size:
            raise InputError(f"A seam overlap of {overlap} frames needs batches of more than {overlap} "
                             f"frames (batch size {self.batch_size}).", "Use an overlap below the batch size, e.g. 2.")
        if self.mode == "quality":
            self.modulation.check()
        else:
            make_upsampler("guided_filter", **self.guided)
        if self.reference_mask is not None:  # dtype, negative ids, nothing but void: at its own size
            ref = self.reference_mask
            ref = np.asarray(ref.detach().cpu() if hasattr(ref, "detach") else ref)
            shape = ref.shape[:2] if ref.ndim >= 2 else ref.shape
            prepare_reference(ref, shape, None, self.void_values)

    def describe(self) -> dict:
        d = asdict(self)
        d["reference_mask"] = None if self.reference_mask is None else list(np.asarray(self.reference_mask).shape)
        return d


@dataclass
class BatchResult:
    """The newly written frames of one batch."""

    batch: Batch
    labels: Optional[torch.Tensor]  # [n,H,W] int64, label values of the table (None: upsampling skipped)
    coarse: torch.Tensor  # [n,h,w] int64 (refined coarse labels)
    knn: torch.Tensor  # [n,h,w] int64 (context-model labels before refinement)
    #: first frames of new shots among the written frames (video frame numbers; the overlay marks them)
    cuts: Tuple[int, ...] = ()


@dataclass
class SegmentSummary:
    table: LabelTable
    num_frames: int
    frame_size: Tuple[int, int]
    work_size: Tuple[int, int]
    grid: Tuple[int, int]
    backbone: str
    settings: dict
    seconds: Dict[str, float]
    peak_memory_mb: float
    unassigned_clusters: List[int]
    lost_labels: List[int]
    #: the part of ``lost_labels`` smaller than one feature-grid cell in the reference mask
    lost_at_grid: List[int] = field(default_factory=list)
    #: cuts found, the shots and how their labels were linked, label -> shots (:meth:`ShotContext.summary`)
    shots: Optional[dict] = None

    def to_dict(self) -> dict:
        return {
            "backbone": self.backbone, "num_frames": self.num_frames, "frame_size": list(self.frame_size),
            "work_size": list(self.work_size), "feature_grid": list(self.grid), "settings": self.settings,
            "label_table": self.table.to_dict(), "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "seconds_per_frame": round(sum(self.seconds.values()) / max(1, self.num_frames), 4),
            "peak_memory_mb": round(self.peak_memory_mb, 1), "unassigned_clusters": self.unassigned_clusters,
            "lost_labels": self.lost_labels, "lost_at_grid": self.lost_at_grid, "shots": self.shots,
        }


@contextlib.contextmanager
def timed(seconds: Dict[str, float], key: str) -> Iterator[None]:
    """Add the wall time of the ``with`` block to ``seconds[key]`` (not on an exception)."""
    t = time.perf_counter()
    yield
    seconds[key] += time.perf_counter() - t


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA, else the process's peak RSS (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


class VideoSegmenter:
    """Runs the method over a frame reader; see the module docstring.

    ``read(start, stop) -> [n,H,W,3]`` float in 0..1; ``num_frames``; ``frame_size``.
    After :meth:`run` finishes, :attr:`summary` describes the run.
    """

    def __init__(self, backbone: Backbone, settings: Optional[SegmentSettings] = None,
                 progress: Optional[Progress] = None, cancel: Optional[Callable[[], bool]] = None):
        self.backbone = backbone
        self.settings = settings or SegmentSettings()
        self.settings.check()
        self.progress = progress
        #: cancel() -> True stops the run (checked per batch and per modulation step); it may also raise itself
        self.cancel = cancel
        self.summary: Optional[SegmentSummary] = None
        #: the label table, once the reference batch has named the clusters (before the first result)
        self.table: Optional[LabelTable] = None

    # ------------------------------------------------------------------ helpers
    def _tick(self, done: int, total: int, stage: str) -> None:
        if self.progress is not None:
            self.progress(done, total, stage)

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            from .modulation import ModulationCancelled

            raise ModulationCancelled("Segmentation was cancelled.", "Run again when ready.")

    def _features(self, frames: torch.Tensor, with_reference: bool = False):
        """``(inputs, aggregated, correspondence, reference store or None)`` of one batch."""
        inputs = prepare_batch(self.backbone, frames, self.settings.seed)
        if with_reference:
            from .modulation.reference import reference_pass

            agg, corr, store = reference_pass(self.backbone, inputs, self.settings.modulation,
                                              feature_device=self.backbone.device)  # features stay on the device
            return inputs, agg, corr, store
        agg, corr = capture_features(self.backbone, inputs, device=self.backbone.device)  # stay on the device
        return inputs, agg, corr, None

    def _upsampler(self):
        settings = self.settings
        if settings.mode == "quality":
            return make_upsampler("masked_modulation", settings=settings.modulation)
        return make_upsampler("guided_filter", **settings.guided)

    # ------------------------------------------------------------------ run
    def run(self, read: Callable[[int, int], torch.Tensor], num_frames: int, frame_size: Tuple[int, int],
            skip_upsample: Optional[Callable[[Batch], bool]] = None) -> Iterator[BatchResult]:
        """Yield each batch's results.  ``skip_upsample(batch) -> True`` leaves out the upsampling of a batch
        whose label maps the caller already has (``labels`` is then None): its features and coarse labels
        are still computed, since the scene context model of later batches depends on them."""
        settings = self.settings
        backbone = self.backbone
        if num_frames < 1:
            raise InputError("The video has no frames.", "Give at least one frame.")
        if not 0 <= settings.reference_frame < num_frames:
            raise InputError(f"Reference frame {settings.reference_frame} is outside the video's {num_frames} frames.",
                             f"Use an index in 0..{num_frames - 1}.")
        work = backbone.work_size(*frame_size)
        seconds = {"read": 0.0, "features": 0.0, "coarse": 0.0, "upsample": 0.0, "shots": 0.0}
        with timed(seconds, "shots"):
            batch_size = backbone.config.batch_size if settings.batch_size is None else settings.batch_size
            shots, frame_cuts, cut_source = resolve_shots(settings.shots, read, num_frames, chunk=batch_size)
            batches = plan_shot_batches(shots, batch_size, settings.shots.overlap)
        if backbone.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(backbone.device)
        seed = backbone.config.seed if settings.seed is None else settings.seed
        context = ShotContext(settings, backbone.device, seed, frame_size)
        upsampler = self._upsampler()
        units = len(batches)
        ref_batch = next(b for b in batches if b.write_start <= settings.reference_frame < b.stop)
        ref_shot = shots[ref_batch.shot].start
        if ref_batch.index != 0:  # name clusters on the reference frame's batch first
            with timed(seconds, "read"):
                frames = read(ref_batch.start, ref_batch.stop)
            with timed(seconds, "features"):
                self._tick(0, units, "features")
                _, agg, _, _ = self._features(frames)
            self._init_context(context, agg, settings.reference_frame - ref_batch.start, frame_size, ref_shot)
        for b in batches:
            self._check_cancel()
            self._tick(b.index, units, "features")
            with timed(seconds, "read"):
                frames = read(b.start, b.stop)
            with timed(seconds, "features"):
                inputs, agg, corr, reference_store = self._features(frames, with_reference=settings.mode == "quality")
            self._tick(b.index, units, "coarse")
            with timed(seconds, "coarse"):
                if context.reference_context is None:
                    self._init_context(context, agg, settings.reference_frame - b.start, frame_size, ref_shot)
                if b.first:  # a new shot: the reference's context, or KMeans afresh linked to the labels seen
                    context.begin_shot(b.start, agg, cut_source)
                coarse = context.step(agg, corr, b.start, b.write_offset)  # whole batch: modulation needs every mask
                knn = context.last_knn_labels
            self._tick(b.index, units, "upsample")
            with timed(seconds, "upsample"):
                ids = torch.tensor(context.table.values, dtype=torch.long)
                off = b.write_offset
                if skip_upsample is not None and skip_upsample(b):
                    labels = None
                elif settings.mode == "quality":
                    ctx = UpsampleContext(backbone=backbone, inputs=inputs, seed=settings.seed,
                                          reference_store=reference_store,
                                          progress=lambda d, n, _b=b: self._tick(_b.index * n + d, units * n,
                                                                                 "modulation"),
                                          cancel=self.cancel)
                    labels = upsampler.upsample(frames, coarse, ids, ctx)[off:]
                else:
                    labels = upsampler.upsample(frames[off:].to(backbone.device), coarse[off:], ids,
                                                UpsampleContext(cancel=self.cancel))
            self._tick(b.index + 1, units, "batch")
            self.table = context.table  # a new shot may have added labels
            cuts = tuple(c for c in sorted(set(frame_cuts) | set(context.feature_cuts)) if b.write_start <= c < b.stop)
            yield BatchResult(b, None if labels is None else labels.cpu(), coarse[off:].cpu(), knn[off:].cpu(), cuts)
            del inputs, agg, corr, frames, reference_store
        assignment = context.assignment
        self.summary = SegmentSummary(
            table=context.table, num_frames=num_frames, frame_size=tuple(frame_size), work_size=work,
            grid=context.grid, backbone=backbone.name, settings=settings.describe(), seconds=seconds,
            peak_memory_mb=peak_memory_mb(backbone.device), unassigned_clusters=list(assignment.unassigned_clusters),
            lost_labels=list(assignment.lost_labels), lost_at_grid=list(assignment.lost_at_grid),
            shots=context.summary(num_frames, frame_cuts, cut_source))

    def _init_context(self, shots: ShotContext, agg: torch.Tensor, ref_index: int, frame_size, shot_start) -> None:
        settings = self.settings
        context = shots.anchor_reference(agg, ref_index, shot_start)
        self.table = shots.table
        a = context.assignment
        at_grid = list(a.lost_at_grid)
        lost = [v for v in a.lost_labels if v not in at_grid]
        if at_grid:  # said at once, not only in the summary
            gh, gw = context.grid
            warnings.warn(f"reference label(s) {', '.join(map(str, at_grid))} are smaller than one feature-grid cell "
                          f"({gw}x{gh} cells for {frame_size[1]}x{frame_size[0]} px frames) and vanish from the mask "
                          "at the grid: they will not appear in the output; enlarge those regions in the mask",
                          UserWarning, stacklevel=2)
        if lost:
            warnings.warn(f"reference label(s) {', '.join(map(str, lost))} won no KMeans cluster on the reference "
                          f"frame and will not appear in the output (K = {settings.num_clusters} clusters); raise the "
                          "number of clusters (--clusters) or enlarge those regions in the mask", UserWarning,
                          stacklevel=2)


def segment_video(backbone: Backbone, frames, settings: Optional[SegmentSettings] = None,
                  progress: Optional[Progress] = None, keep_coarse: bool = False,
                  cancel: Optional[Callable[[], bool]] = None):
    """Label maps ``[N,H,W]`` (int64) of a whole video held in memory, plus the run's summary.

    ``frames``: ``[N,H,W,3]`` (torch or numpy; float in 0..1 or uint8 0..255, see
    :func:`~vidseg_core.video_io.frames_from_tensor`) or a :class:`~vidseg_core.video_io.FrameSource`.
    With ``keep_coarse`` also returns the coarse maps ``[N,h,w]``.  ``cancel() -> True`` stops the run
    (see :class:`VideoSegmenter`).
    """
    if not hasattr(frames, "read"):  # a tensor or array (checked); else a FrameSource
        from .video_io import frames_from_tensor

        tensor = frames_from_tensor(frames)
        n, size = tensor.shape[0], tuple(tensor.shape[1:3])

        def read(a, b):
            return tensor[a:b]
    else:
        n, size, read = len(frames), tuple(frames.frame_size), frames.read
    seg = VideoSegmenter(backbone, settings, progress, cancel)
    labels = coarse = None
    for res in seg.run(read, n, size):
        if labels is None:
            labels = torch.empty((n,) + tuple(res.labels.shape[1:]), dtype=torch.long)
            coarse = torch.empty((n,) + tuple(res.coarse.shape[1:]), dtype=torch.long)
        labels[res.batch.write_start:res.batch.stop] = res.labels
        coarse[res.batch.write_start:res.batch.stop] = res.coarse
    return (labels, coarse, seg.summary) if keep_coarse else (labels, seg.summary)
