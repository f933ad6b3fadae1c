"""The scene context model over an edited video: one :class:`SceneContext` per shot, linked by a bank.

* The shot holding the reference frame is anchored exactly as a single-shot run is (KMeans on the
  reference frame's batch, clusters named by the reference mask or by first appearance); its clusters
  seed the :class:`~vidseg_core.label_bank.LabelBank`.
* Every other shot starts afresh: KMeans on its first batch, its first frame's clusters linked to the
  bank (:meth:`LabelBank.link`), the KNN fit on that frame.  Nothing of the previous shot is used: the
  KNN never labels a shot with another shot's tokens and CBR never tracks across a cut.
* With cut detection ``auto``, every batch is also checked on its features
  (:class:`~vidseg_core.shots.FeatureCutCheck`): where a frame has no close neighbour in the frame before
  it, the batch is split there and the rest is anchored as a new shot.

Without a cut all of this is one :class:`SceneContext` doing what it always did, step for step.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from .context_model import SceneContext
from .errors import InputError
from .kmeans import fit_kmeans
from .label_bank import LabelBank
from .labels import ClusterAssignment
from .shots import FeatureCutCheck, ShotSettings


class ShotContext:
    """Per-shot scene context models; ``settings`` is a :class:`~vidseg_core.pipeline.SegmentSettings`."""

    def __init__(self, settings, device, seed: int, frame_size: Optional[Tuple[int, int]] = None,
                 n_neighbors: int = 4, knn_impl: str = "torch"):
        self.settings = settings
        self.shot_settings: ShotSettings = settings.shots
        self.device = torch.device(device)
        self.seed = int(seed)
        self.frame_size = frame_size
        self.n_neighbors, self.knn_impl = n_neighbors, knn_impl
        self.bank = LabelBank(self.shot_settings.link_threshold, settings.names, settings.void_values)
        auto = isinstance(self.shot_settings.cuts, str) and self.shot_settings.cuts == "auto"
        self.check = FeatureCutCheck(self.shot_settings.feature_collapse) if auto else None
        self.reference_context: Optional[SceneContext] = None
        self.reference_start: Optional[int] = None
        self.current: Optional[SceneContext] = None
        self.current_start: Optional[int] = None
        self.starts: List[int] = []
        self.feature_cuts: List[int] = []
        self.last_knn_labels: Optional[torch.Tensor] = None
        self._previous: Optional[torch.Tensor] = None
        self._last: Optional[Tuple[int, torch.Tensor]] = None  # (first frame, refined labels) of the last batch

    def _context(self) -> SceneContext:
        return SceneContext(self.n_neighbors, self.settings.refiner, self.device, self.knn_impl)

    # ------------------------------------------------------------ anchoring
    def anchor_reference(self, features: torch.Tensor, ref_index: int, shot_start: int) -> SceneContext:
        """Today's initialisation on the reference frame's batch (``features`` [T, h, w, C]); its clusters
        seed the bank.  ``shot_start``: the first frame of the reference frame's shot."""
        settings = self.settings
        ctx = self._context()
        ctx.init(features, settings.reference_mask, ref_index, settings.num_clusters, settings.n_init, self.seed,
                 settings.kmeans_impl, settings.void_values, frame_size=self.frame_size, names=settings.names)
        self.bank.seed(ctx.kmeans_centers, ctx.assignment.mapping, ctx.assignment.kind, {"start": int(shot_start)})
        self.reference_context, self.reference_start = ctx, int(shot_start)
        return ctx

    def anchor_clusters(self, frame_features: torch.Tensor, clusters: torch.Tensor, assignment: ClusterAssignment,
                        table, centers: torch.Tensor, shot_start: int) -> SceneContext:
        """:meth:`anchor_reference` with the reference frame clustered and named before (``clusters`` [h, w],
        ``assignment``, ``table``; ``centers`` [K, C] the KMeans centres, which seed the bank)."""
        ctx = self._context()
        ctx.init_from_assignment(frame_features, clusters, assignment, table=table)
        ctx.kmeans_centers = centers
        self.bank.seed(centers, assignment.mapping, assignment.kind, {"start": int(shot_start)})
        self.reference_context, self.reference_start = ctx, int(shot_start)
        return ctx

    def begin_shot(self, start: int, features: torch.Tensor, cut: str = "frames") -> SceneContext:
        """Start the shot whose first frame is ``start``; ``features`` [T, h, w, C] are its first batch's."""
        start = int(start)
        if self.reference_start == start:
            ctx = self.reference_context
        else:
            if self.reference_context is None:
                raise InputError("The shot holding the reference frame must be anchored first.",
                                 "Call anchor_reference on the reference frame's batch before other shots.")
            ctx = self._link(features, start, cut)
        self.current, self.current_start = ctx, start
        self.starts.append(start)
        if self.check is not None:
            self.check.reset()
        self._previous = self._last = None
        return ctx

    def _link(self, features: torch.Tensor, start: int, cut: str) -> SceneContext:
        settings = self.settings
        feats = features.to(self.device, torch.float32)
        T, h, w, C = feats.shape
        k = min(settings.num_clusters, T * h * w)
        km = fit_kmeans(feats.reshape(-1, C), k, n_init=settings.n_init, seed=self.seed, impl=settings.kmeans_impl,
                        device=self.device)
        clusters = km.labels.reshape(T, h, w)[0]
        present = sorted(set(clusters.flatten().tolist()))
        mapping = self.bank.link(km.centers, present, {"start": start, "cut": cut})
        kind = self.bank.kind
        assignment = ClusterAssignment(mapping, [c for c in range(k) if c not in mapping], [], kind)
        ctx = self._context()
        ctx.init_from_assignment(feats[0], clusters, assignment, table=self.bank.table)
        return ctx

    # ------------------------------------------------------------ stepping
    def step(self, aggregated: torch.Tensor, correspondence: torch.Tensor, batch_start: int,
             write_offset: int = 0) -> torch.Tensor:
        """Refined labels of the whole batch (frames from ``batch_start``); with the feature check on, a batch
        whose features collapse at a frame is split there and the rest starts a new shot."""
        cut = None
        if self.check is not None:
            cut = self.check.scan(aggregated, write_offset, self._previous)
        if cut is None:
            out = self.current.step(aggregated, correspondence, 0)
            knn = self.current.last_knn_labels
            if self.shot_settings.overlap and self._last is not None and write_offset > 0:
                out = self._seam(aggregated, out, batch_start, write_offset)
            self._note(out[write_offset:], self.current_start)
        else:
            parts, knns = [], []
            if cut > 0:
                parts.append(self.current.step(aggregated[:cut], correspondence[:cut], 0))
                knns.append(self.current.last_knn_labels)
                if cut > write_offset:
                    self._note(parts[-1][write_offset:], self.current_start)
            self.feature_cuts.append(int(batch_start + cut))
            self.begin_shot(batch_start + cut, aggregated[cut:], "features")
            parts.append(self.current.step(aggregated[cut:], correspondence[cut:], 0))
            knns.append(self.current.last_knn_labels)
            self._note(parts[-1][max(0, write_offset - cut):], self.current_start)
            out, knn = torch.cat(parts), torch.cat(knns)
        self.last_knn_labels = knn
        self._previous = aggregated[-1]
        self._last = (int(batch_start), out)
        return out

    def _seam(self, aggregated, out, batch_start: int, write_offset: int) -> torch.Tensor:
        """The frames this batch shares with the one before keep their labels, and decide the ids of the rest
        (:func:`seam_relabel`); the KNN is refit on the corrected labels."""
        last_start, last = self._last
        k = min(write_offset, last_start + last.shape[0] - batch_start)
        if k <= 0:
            return out
        previous = last[batch_start - last_start:batch_start - last_start + k].to(out.device)
        fixed = seam_relabel(out, previous)
        self.current.refit(aggregated, fixed)
        return fixed

    def _note(self, labels: torch.Tensor, start: int) -> None:
        if labels.numel():
            self.bank.note_labels(start, labels)

    # ------------------------------------------------------------ results
    @property
    def table(self):
        return self.bank.table

    @property
    def assignment(self) -> ClusterAssignment:
        return self.reference_context.assignment

    @property
    def grid(self):
        return self.reference_context.grid

    def summary(self, num_frames: int, frame_cuts: List[int], source: str) -> dict:
        """The ``shots`` part of ``summary.json``: cuts found, shots with their links, label -> shots."""
        starts = sorted(set(self.starts))
        index = {st: i for i, st in enumerate(starts)}
        shots = []
        for rec in sorted(self.bank.shots, key=lambda r: r["start"]):
            i = index.get(rec["start"])
            if i is None:
                continue
            stop = starts[i + 1] if i + 1 < len(starts) else num_frames
            shots.append(dict(rec, index=i, stop=stop))
        label_shots: Dict[str, List[int]] = {}
        for v, ss in self.bank.label_shots().items():
            label_shots[str(v)] = sorted(index[st] for st in ss if st in index)
        return {"cut_detection": source, "cuts": sorted(set(frame_cuts) | set(self.feature_cuts)),
                "frame_cuts": list(frame_cuts), "feature_cuts": list(self.feature_cuts),
                "shots": shots, "label_shots": label_shots}


def seam_relabel(labels: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """``labels`` [T, h, w] of a batch whose first ``k = len(previous)`` frames were labelled ``previous``
    by the batch before.  Each label whose cells on those frames mostly (more than half) had another label
    before is renamed to that label in the whole batch; the shared frames take their earlier labels."""
    k = int(previous.shape[0])
    new, old = labels[:k].reshape(-1), previous.reshape(-1).to(labels.device)
    values = torch.unique(torch.cat([labels.reshape(-1), old]))
    ni, oi = torch.searchsorted(values, new), torch.searchsorted(values, old)
    L = int(values.numel())
    joint = torch.bincount(ni * L + oi, minlength=L * L).reshape(L, L)
    best = joint.argmax(1)
    total = joint.sum(1)
    rename = (best != torch.arange(L, device=labels.device)) & (2 * joint.gather(1, best[:, None])[:, 0] > total)
    lut = torch.where(rename, values[best], values)
    out = lut[torch.searchsorted(values, labels)]
    out[:k] = previous.to(out.device)
    return out


def shots_of(settings, num_frames: int, frames=None):
    """``(shots, frame cuts, source)`` of :func:`coarse_segment_shots`: ``frames`` [N, H, W, 3] for cut
    detection on the frames (None: with ``cuts="auto"`` the feature check alone finds cuts)."""
    from .shots import resolve_shots, shots_from_cuts

    cuts = settings.shots.cuts
    if frames is not None:
        return resolve_shots(settings.shots, lambda a, b: frames[a:b], num_frames)
    if isinstance(cuts, str):
        return shots_from_cuts(num_frames, []), [], "features" if cuts == "auto" else "off"
    return resolve_shots(settings.shots, None, num_frames)


def coarse_segment_shots(features, settings, batch_size: int = 14, frames=None, device="cpu",
                         seed: Optional[int] = None, shots=None, clustered_reference=None, progress=None,
                         n_neighbors: int = 4, knn_impl: str = "torch"):
    """Coarse label maps ``[N, h, w]`` of a whole video's :class:`~vidseg_core.video_features.VideoFeatures`
    through the shot machinery (the pipeline's coarse stage without a backbone), plus the label table and
    the shots summary.  ``frames`` [N, H, W, 3]: for cut detection on the frames (None: the feature check
    alone finds cuts with ``cuts="auto"``).  ``shots``: ``(shots, frame cuts, source)`` found before
    (:func:`shots_of`; then ``frames`` is not read).  ``clustered_reference``: ``(cluster map [h, w], assignment,
    table, centres [K, C])`` of the reference frame clustered and named before (the stage nodes), instead of
    KMeans on the reference batch here.  ``progress(done, total)``: called with written frames."""
    from .shots import plan_shot_batches

    N = features.num_frames
    shots, frame_cuts, source = shots if shots is not None else shots_of(settings, N, frames)
    run_seed = 1 if seed is None and settings.seed is None else (seed if seed is not None else settings.seed)
    batches = plan_shot_batches(shots, batch_size, settings.shots.overlap)
    ctx = ShotContext(settings, device, run_seed,
                      tuple(features.frame_size), n_neighbors, knn_impl)
    rb = next(b for b in batches if b.write_start <= settings.reference_frame < b.stop)
    agg, corr = features.aggregated, features.correspondence
    if clustered_reference is None:
        ctx.anchor_reference(agg[rb.start:rb.stop], settings.reference_frame - rb.start, shots[rb.shot].start)
    else:
        ctx.anchor_clusters(agg[settings.reference_frame], *clustered_reference, shots[rb.shot].start)
    h, w = features.grid
    out = torch.empty(N, h, w, dtype=torch.long)
    for b in batches:
        if progress is not None:
            progress(b.write_start, N)
        if b.first:
            ctx.begin_shot(b.start, agg[b.start:b.stop], source)
        out[b.write_start:b.stop] = ctx.step(agg[b.start:b.stop], corr[b.start:b.stop], b.start,
                                             b.write_offset)[b.write_offset:].cpu()
    if progress is not None:
        progress(N, N)
    return out, ctx.table, ctx.summary(N, frame_cuts, source)
