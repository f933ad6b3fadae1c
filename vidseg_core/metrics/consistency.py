"""VSPW video consistency VC_n (reported as mVC_8 and mVC_16), docs/design/metrics.md#vspw-video-consistency-mvc_8-mvc_16.

For a video of T frames and each window start ``i in range(T - n)``::

    G_i  = pixels whose GT label is the same in frames i .. i+n-1
    P_i  = pixels whose predicted label is the same in frames i .. i+n-1
    VC_i = |G_i & P_i| / |G_i|          (NaN when |G_i| = 0)

and ``mVC_n = nanmean`` of ``VC_i`` over the windows of ALL videos pooled
(long videos weigh more).  Mirrored quirks of the official ``VC_perclip.py``:

* ``range(T - n)`` omits the last full window (a 50-frame video gives 42
  windows for n = 8 and 34 for n = 16); videos with ``T <= n`` give none;
* the ground truth is compared raw: no void handling, no label remap;
* the prediction is only compared with itself, so VC is invariant to any
  relabelling of the prediction and a constant prediction scores 1 - always
  report it next to mIoU.

Implementation: "label constant over frames i..i+n-1" equals "equal in every
consecutive pair (t, t+1), t = i..i+n-2" (equality is transitive), so a
per-pixel run length of consecutive equal pairs is carried frame by frame and
a whole video is never held in memory.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, List, Optional

import numpy as np

from ..errors import InputError
from .labels import as_label_array, check_same_shape


@dataclass
class VCResult:
    """``value`` = nanmean over windows (``None`` if no window is defined)."""

    n: int
    value: Optional[float]
    windows: int
    nan_windows: int
    videos: int
    skipped_videos: int
    window_values: List[Optional[float]] = field(default_factory=list)

    def to_dict(self, per_window: bool = False) -> dict:
        d = asdict(self)
        if not per_window:
            d.pop("window_values")
        return d


class VideoConsistency:
    """Accumulates VC_n windows over videos.

    Per video either call :meth:`add_video` with the frame stacks / iterables,
    or stream frames with :meth:`start_video`, :meth:`update` (one frame) and
    :meth:`end_video`.  :meth:`compute` pools all windows.
    """

    def __init__(self, n: int):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
            raise InputError(f"VC window length must be an integer >= 2, got {n!r}.", "Use 8 or 16 (mVC_8, mVC_16).")
        self.n = int(n)
        self.values: List[float] = []
        self.videos = 0
        self.skipped_videos = 0
        self._in_video = False

    # -- streaming -------------------------------------------------------
    def start_video(self) -> None:
        self._prev = None
        self._run_gt = None
        self._run_pred = None
        self._t = 0
        self._pending: List[float] = []
        self._in_video = True

    def update(self, pred, gt) -> None:
        """Add the next frame ``[H, W]`` of the current video."""
        if not self._in_video:
            self.start_video()
        pred = as_label_array(pred, "prediction", 2)
        gt = as_label_array(gt, "ground truth", 2)
        check_same_shape(pred, gt)
        if self._prev is not None:
            ppred, pgt = self._prev
            if pgt.shape != gt.shape:
                raise InputError(f"Frame {self._t} is {gt.shape[::-1]} but the previous frames are {pgt.shape[::-1]} (W, H).",
                                 "Give every frame of a video the same size.")
            cap = self.n  # run lengths only need to reach n - 1
            eq_gt = pgt == gt
            eq_pred = ppred == pred
            if self._run_gt is None:
                self._run_gt = eq_gt.astype(np.int32)
                self._run_pred = eq_pred.astype(np.int32)
            else:
                self._run_gt = np.where(eq_gt, np.minimum(self._run_gt + 1, cap), 0)
                self._run_pred = np.where(eq_pred, np.minimum(self._run_pred + 1, cap), 0)
            pair = self._t - 1  # index of the pair (t-1, t)
            start = pair - (self.n - 2)  # window [start, start + n - 1] ends at this pair
            if start >= 0:
                g = self._run_gt >= self.n - 1
                ng = int(g.sum())
                both = int((g & (self._run_pred >= self.n - 1)).sum())
                self._pending.append(both / ng if ng else float("nan"))
        self._prev = (pred, gt)
        self._t += 1

    def end_video(self) -> None:
        """Close the current video: keep windows ``range(T - n)`` (official off-by-one)."""
        if not self._in_video:
            return
        t = self._t
        self._in_video = False
        self._prev = self._run_gt = self._run_pred = None
        self.videos += 1
        if t <= self.n:
            self.skipped_videos += 1
            return
        # self._pending holds the T - n + 1 full windows; the official range(T - n) drops the last.
        self.values.extend(self._pending[: t - self.n])

    def add_video(self, pred_frames: Iterable, gt_frames: Iterable) -> None:
        """Add one video given as ``[T, H, W]`` arrays or iterables of ``[H, W]`` frames."""
        if isinstance(pred_frames, np.ndarray) or hasattr(pred_frames, "shape"):
            pred_frames = as_label_array(pred_frames, "prediction", 3)
        if isinstance(gt_frames, np.ndarray) or hasattr(gt_frames, "shape"):
            gt_frames = as_label_array(gt_frames, "ground truth", 3)
        if hasattr(pred_frames, "shape") and hasattr(gt_frames, "shape"):
            check_same_shape(pred_frames, gt_frames)
        self.start_video()
        pred_it, gt_it = iter(pred_frames), iter(gt_frames)
        sentinel = object()
        while True:
            p = next(pred_it, sentinel)
            g = next(gt_it, sentinel)
            if p is sentinel or g is sentinel:
                if p is not g:
                    self._in_video = False
                    raise InputError("Prediction and ground truth have different numbers of frames.",
                                     "Give one predicted frame per ground-truth frame.")
                break
            self.update(p, g)
        self.end_video()

    def compute(self) -> VCResult:
        v = np.asarray(self.values, dtype=np.float64)
        ok = ~np.isnan(v)
        return VCResult(
            n=self.n,
            value=float(v[ok].mean()) if ok.any() else None,
            windows=int(v.size),
            nan_windows=int((~ok).sum()),
            videos=self.videos,
            skipped_videos=self.skipped_videos,
            window_values=[None if np.isnan(x) else float(x) for x in v],
        )


def video_consistency(pred, gt, n: int) -> VCResult:
    """VC_n of ONE video (``[T, H, W]`` prediction and ground truth)."""
    acc = VideoConsistency(n)
    acc.add_video(pred, gt)
    return acc.compute()
