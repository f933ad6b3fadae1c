"""Shots of an edited video: cut detection on the frames, and batches that follow the shots.

The scene context model assumes one continuous shot.  An edited video is cut into shots first:

* :class:`FrameCutDetector` finds cuts on the frames (cheap, CPU).  Each frame is reduced to a colour
  histogram (YCbCr, 8x4x4 bins) of a 27x48 thumbnail; the score of frame ``t`` is the histogram
  distance to frame ``t-1`` (half the L1 distance, 0..1; position-invariant, so camera motion moves it
  little).  A **hard cut** is a score of at least ``threshold`` that is also ``ratio`` times the mean
  score of the ``window`` frames on each side (a cut stands out of its neighbourhood).  A **dissolve**
  (fade) is a run of frames each scoring at least ``gradual`` whose two ends differ by at least
  ``threshold``: one cut is placed in its middle.
* :func:`plan_shot_batches` plans batches per shot: a batch never spans a cut, a shot shorter than B
  frames is its own batch, a shot's short tail is computed as the shot's last B frames (within the shot).
  Without a cut the plan is :func:`~vidseg_core.batching.plan_batches`'s, batch for batch.

The settings of all of this are :class:`ShotSettings` (``SegmentSettings.shots``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Union

import torch

from .batching import Batch, plan_batches
from .errors import InputError

CUT_MODES = ("off", "auto")


@dataclass
class ShotSettings:
    """How an edited video is split into shots and how labels are linked across them."""

    #: "off" (one shot), "auto" (detect cuts), or the user's cut frames (each the first frame of a new shot)
    cuts: Union[str, Sequence[int]] = "auto"
    #: hard cut: histogram distance to the previous frame (0..1) at least this ...
    threshold: float = 0.3
    #: ... and this many times the mean of its neighbours' (``window`` frames each side)
    ratio: float = 3.0
    window: int = 2
    #: dissolve: every frame of the run scores at least this (a fast pan scores < 0.1 on the test clips)
    gradual: float = 0.12
    #: the feature check: a cut where a frame's nearest-neighbour distance to the frame before (1 - mean
    #: cosine similarity) is at least this many times the shot's median (0 = off)
    feature_collapse: float = 1.6
    #: a new shot's cluster joins a bank cluster (a label seen before) at a centroid cosine similarity >= this
    link_threshold: float = 0.8
    #: seams: each batch after a shot's first repeats this many frames of the batch before; their labels
    #: (already written) decide the new batch's label ids (:func:`~vidseg_core.shot_context.seam_relabel`)
    overlap: int = 0

    def check(self) -> None:
        from .validation import check_finite, check_int

        if isinstance(self.cuts, str):
            if self.cuts not in CUT_MODES:
                raise InputError(f"Unknown cut detection {self.cuts!r}.",
                                 "Use 'off', 'auto' or a list of cut frames (the first frame of each new shot).")
        else:
            try:
                cuts = list(self.cuts)
            except TypeError:
                raise InputError(f"cuts must be 'off', 'auto' or a list of frame numbers, got {self.cuts!r}.",
                                 "Give e.g. [120, 300].") from None
            for c in cuts:
                check_int("cut frame", c, 1, None, "A cut frame is the first frame of a new shot (>= 1).")
        for name, low, high in (("threshold", 0.0, 1.0), ("gradual", 0.0, 1.0), ("link_threshold", -1.0, 1.0)):
            v = check_finite(f"shots.{name}", getattr(self, name), f"Give a number in {low}..{high}.")
            if not low <= v <= high:
                raise InputError(f"shots.{name} = {v} is outside {low}..{high}.", f"Give a number in {low}..{high}.")
        if not check_finite("shots.ratio", self.ratio, "Give a ratio >= 1, e.g. 3.") >= 1:
            raise InputError(f"shots.ratio = {self.ratio} is below 1.", "Give a ratio >= 1, e.g. 3.")
        check_int("shots.window", self.window, 1, None, "Give e.g. 2 frames.")
        check_int("shots.overlap", self.overlap, 0, None, "Give 0 (no overlap) or a few frames, e.g. 2.")
        fc = check_finite("shots.feature_collapse", self.feature_collapse, "Give 0 (off) or a ratio > 1, e.g. 1.6.")
        if fc != 0 and fc <= 1:
            raise InputError(f"shots.feature_collapse = {fc} would cut inside every shot.",
                             "Give 0 (off) or a ratio > 1, e.g. 1.6.")


def parse_cuts(text) -> Union[str, List[int]]:
    """``--cuts``: "auto", "off", or comma-separated cut frames ("120,300")."""
    t = str(text).strip().lower()
    if t in CUT_MODES:
        return t
    try:
        cuts = [int(x) for x in t.replace(" ", "").split(",") if x]
    except ValueError:
        raise InputError(f"--cuts {text!r} is neither auto, off nor a list of frame numbers.",
                         "Write --cuts auto, --cuts off or --cuts 120,300 (first frames of the new shots).") from None
    if not cuts:
        raise InputError("--cuts lists no frame.", "Write --cuts auto, --cuts off or e.g. --cuts 120,300.")
    return cuts


@dataclass(frozen=True)
class Shot:
    """Frames ``[start, stop)`` of one shot."""

    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ShotBatch(Batch):
    """A :class:`~vidseg_core.batching.Batch` inside one shot; ``first`` marks the shot's first batch."""

    shot: int = 0
    first: bool = True


def shots_from_cuts(num_frames: int, cuts: Sequence[int]) -> List[Shot]:
    """The shots of a video of ``num_frames`` frames cut at ``cuts`` (first frames of new shots)."""
    if num_frames < 1:
        raise InputError("The video has no frames.", "Give at least one frame.")
    cs = sorted({int(c) for c in cuts})
    bad = [c for c in cs if not 0 < c < num_frames]
    if bad:
        raise InputError(f"Cut frame(s) {', '.join(map(str, bad))} are outside the video's frames 1..{num_frames - 1}.",
                         "A cut is the first frame of a new shot: give numbers in 1..N-1 of the selected frames.")
    bounds = [0] + cs + [num_frames]
    return [Shot(i, a, b) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def plan_shot_batches(shots: Sequence[Shot], batch_size: int, overlap: int = 0) -> List[ShotBatch]:
    """Batches per shot (see the module docstring), numbered over the whole video.  With ``overlap`` every
    batch after a shot's first starts ``overlap`` frames before its first written frame (those frames are
    computed again, not written); each batch still has at most ``batch_size`` frames."""
    if overlap and overlap >= batch_size:
        raise InputError(f"A seam overlap of {overlap} frames needs batches of more than {overlap} frames "
                         f"(batch size {batch_size}).", "Use an overlap below the batch size, e.g. 2.")
    out: List[ShotBatch] = []
    for sh in shots:
        if not overlap:
            for b in plan_batches(len(sh), batch_size):
                out.append(ShotBatch(len(out), sh.start + b.start, sh.start + b.stop, sh.start + b.write_start,
                                     sh.index, b.index == 0))
            continue
        write, first = sh.start, True
        while write < sh.stop:
            start = write if first else write - overlap
            stop = min(start + batch_size, sh.stop)
            if stop - start < batch_size:  # the shot's tail: its last B frames, as without overlap
                start = max(sh.start, stop - batch_size)
            out.append(ShotBatch(len(out), start, stop, write, sh.index, first))
            write, first = stop, False
    return out


# ---------------------------------------------------------------- the frame detector
_BINS = (8, 4, 4)


def frame_histograms(frames: torch.Tensor, thumb=(27, 48)) -> torch.Tensor:
    """Normalised YCbCr colour histograms ``[n, 128]`` of frames ``[n, H, W, 3]`` (float 0..1 or uint8)."""
    n, H, W, _ = frames.shape
    sy, sx = max(1, H // (2 * thumb[0])), max(1, W // (2 * thumb[1]))  # subsample before pooling: cheap
    x = frames[:, ::sy, ::sx].float()
    x = (x / 255.0 if frames.dtype == torch.uint8 else x).permute(0, 3, 1, 2)
    t = torch.nn.functional.adaptive_avg_pool2d(x, thumb)
    r, g, b = t[:, 0], t[:, 1], t[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    ycc = torch.stack([y, (b - y) * 0.564 + 0.5, (r - y) * 0.713 + 0.5], 1).clamp_(0.0, 0.999)
    q = (ycc * torch.tensor(_BINS, dtype=ycc.dtype).view(1, 3, 1, 1)).long()
    idx = (q[:, 0] * (_BINS[1] * _BINS[2]) + q[:, 1] * _BINS[2] + q[:, 2]).flatten(1)
    h = torch.zeros(n, _BINS[0] * _BINS[1] * _BINS[2]).scatter_add_(1, idx, torch.ones(idx.shape))
    return h / h.sum(1, keepdim=True)


def histogram_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Half the L1 distance of normalised histograms (0 = equal, 1 = disjoint)."""
    return 0.5 * (a - b).abs().sum(-1)


class FrameCutDetector:
    """Cuts from the frames' colour histograms; see the module docstring."""

    def __init__(self, settings: Optional[ShotSettings] = None):
        self.settings = settings or ShotSettings()
        self.scores: Optional[torch.Tensor] = None  # [N]: score of frame t (0 for frame 0)

    def detect(self, histograms: torch.Tensor) -> List[int]:
        """Cut frames (first frames of new shots) from per-frame histograms ``[N, bins]``."""
        settings = self.settings
        N = int(histograms.shape[0])
        score = torch.zeros(N)
        if N > 1:
            score[1:] = histogram_distance(histograms[1:], histograms[:-1])
        self.scores = score
        cuts = set()
        for t in range(1, N):
            if score[t] < settings.threshold:
                continue
            nb = [score[u] for u in range(max(1, t - settings.window), min(N, t + settings.window + 1)) if u != t]
            mean = float(sum(nb) / len(nb)) if nb else 0.0
            if mean == 0.0 or score[t] >= settings.ratio * mean:
                cuts.add(t)
        t = 1
        while t < N:  # dissolves: runs of high scores whose ends differ like a cut, no hard cut inside
            if score[t] < settings.gradual:
                t += 1
                continue
            u = t
            while u + 1 < N and score[u + 1] >= settings.gradual:
                u += 1
            if u > t and not any(c in cuts for c in range(t, u + 1)) and \
                    float(histogram_distance(histograms[t - 1], histograms[u])) >= settings.threshold:
                cuts.add((t + u + 1) // 2)
            t = u + 1
        return sorted(cuts)

    def detect_video(self, read: Callable[[int, int], torch.Tensor], num_frames: int, chunk: int = 32) -> List[int]:
        """Cuts of a whole video read in chunks through ``read(start, stop) -> [n, H, W, 3]``."""
        hists = [frame_histograms(read(a, min(a + chunk, num_frames))) for a in range(0, num_frames, chunk)]
        return self.detect(torch.cat(hists))


def resolve_shots(settings: ShotSettings, read: Callable[[int, int], torch.Tensor], num_frames: int,
                  chunk: int = 32):
    """``(shots, cuts found by the frame detector or given, source)`` for a video; the detector reads
    ``chunk`` frames at a time (the pipeline passes its batch size: no more frames held than a batch)."""
    if isinstance(settings.cuts, str):
        if settings.cuts == "off":
            return shots_from_cuts(num_frames, []), [], "off"
        cuts = FrameCutDetector(settings).detect_video(read, num_frames, chunk=max(1, int(chunk)))
        return shots_from_cuts(num_frames, cuts), cuts, "frames"
    return shots_from_cuts(num_frames, list(settings.cuts)), sorted({int(c) for c in settings.cuts}), "user"


def nn_similarity(a: torch.Tensor, b: torch.Tensor, queries: int = 256) -> torch.Tensor:
    """Mean over a strided subset of ``queries`` tokens of frame ``a`` [h, w, C] of the cosine similarity to
    its nearest token in frame ``b`` [h, w, C] (the KNN's view: is there a neighbour like me?)."""
    qa = a.reshape(-1, a.shape[-1]).float()
    step = max(1, qa.shape[0] // queries)
    qa = torch.nn.functional.normalize(qa[::step], dim=1)
    kb = torch.nn.functional.normalize(b.reshape(-1, b.shape[-1]).float(), dim=1)
    return (qa @ kb.T).amax(1).mean()


@dataclass
class FeatureCutCheck:
    """The feature-side check: a collapse of the nearest-neighbour similarity between consecutive frames.

    ``scan(features, first_new)`` returns the first frame index (relative to ``features``) at or after
    ``first_new`` whose distance to the frame before (1 - :func:`nn_similarity`) is at least ``collapse``
    times the shot's median so far (cosine similarity has a high floor between unrelated tokens, so the
    distance, not the similarity, is compared); the distances of a shot are kept in ``history`` (reset at
    every shot)."""

    collapse: float = 1.6
    min_history: int = 3
    history: List[float] = field(default_factory=list)

    def reset(self) -> None:
        self.history = []

    def scan(self, features: torch.Tensor, first_new: int, previous: Optional[torch.Tensor] = None) -> Optional[int]:
        """``features`` [T, h, w, C] of a batch; ``previous`` [h, w, C] the frame before the batch's first
        written frame when it is not in ``features`` (None at a shot's start)."""
        if self.collapse <= 0:
            return None
        T = int(features.shape[0])
        ts = [t for t in range(max(0, first_new), T) if t > 0 or previous is not None]
        if not ts:
            return None
        sims = torch.stack([nn_similarity(features[t], features[t - 1] if t > 0 else previous) for t in ts])
        for t, sim in zip(ts, sims.tolist()):  # one host read per batch
            dist = 1.0 - sim
            if len(self.history) >= self.min_history:
                med = sorted(self.history)[len(self.history) // 2]
                if dist >= self.collapse * max(med, 1e-6):
                    return t
            self.history.append(dist)
        return None
