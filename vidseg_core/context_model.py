"""The scene context model: KNN over diffusion features, updated batch by batch (paper §4.1; docs/design/authors_code.md#label-assignment-and-the-scene-context-model).

* :class:`KNNContextModel` -- ``KNeighborsClassifier(n_neighbors=4)`` semantics
  (Euclidean distance, uniform votes) in torch: squared distances by chunked
  matmul, ``topk``, one-hot vote.  **Ties**: a vote tie goes to the smallest
  label value -- what the installed scikit-learn (1.9) does, since its
  uniform-weight ``predict`` takes ``classes_[argmax(proba)]`` with sorted
  ``classes_`` (checked in ``tests/test_context_model.py``); equal distances
  at the k-th neighbour go to the smallest training index (sklearn leaves
  this to its heap order; it only matters for duplicate tokens).
  ``impl="sklearn"`` runs sklearn itself (reference implementation).
* :class:`SceneContext` -- the streaming, stateful batch loop.
  ``init`` fits KMeans (K = 20, n_init = 10, k-means++) on all tokens of one
  batch, names the clusters of the reference frame (``labels.assign_labels``)
  and fits the KNN on that frame's tokens (docs/design/authors_code.md#label-assignment-and-the-scene-context-model).  Each ``step``
  labels a batch with the KNN, refines the labels with the pluggable
  :class:`~vidseg_core.refiners.Refiner` (CBR by default) and *replaces* the
  KNN training set by this batch's aggregated features and refined labels
  (docs/design/authors_code.md#label-assignment-and-the-scene-context-model): batch b is labelled by the model fit on batch b-1, so the
  state is one batch, whatever the video length.
* :func:`coarse_segment` -- whole-video convenience over a
  :class:`~vidseg_core.video_features.VideoFeatures`, batched with
  :func:`~vidseg_core.batching.plan_batches` (an overlapping tail batch is
  computed in full but only its new frames are written).  KMeans runs on the
  batch that contains the reference frame (the first batch for the paper's
  first-frame protocol).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import torch

from .batching import plan_batches
from .coarse_segmentation import CoarseSegmentation
from .errors import InputError
from .kmeans import fit_kmeans
from .labels import DEFAULT_VOID, ClusterAssignment, LabelTable, assign_labels, note_grid_losses, prepare_reference
from .refiners import Refiner, get_refiner
from .tensor_ops import one_hot_mask, smallest_k


def _owned(x: torch.Tensor, device, dtype) -> torch.Tensor:
    """``x`` on ``device``/``dtype`` as a tensor the caller cannot mutate under us."""
    y = x.to(device=device, dtype=dtype)
    if y.data_ptr() == x.data_ptr():
        y = y.clone()
    return y.contiguous()


class KNNContextModel:
    """k-nearest-neighbour classifier over feature tokens (Euclidean, uniform votes)."""

    def __init__(self, n_neighbors: int = 4, impl: str = "torch", device=None, dtype=torch.float32,
                 chunk_size: int = 1024, sync_free: Optional[bool] = None):
        if not isinstance(n_neighbors, int) or n_neighbors < 1:
            raise InputError(f"n_neighbors must be a positive integer, got {n_neighbors!r}.", "Use 4 (authors).")
        if impl not in ("torch", "sklearn"):
            raise InputError(f"Unknown KNN implementation {impl!r}.", "Use 'torch' or 'sklearn'.")
        self.n_neighbors = n_neighbors
        self.impl = impl
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.chunk_size = max(1, int(chunk_size))
        #: distance ties decided on the device (no host read per chunk); None: on any device but the CPU,
        #: where the host check is free and the float top-k 5x cheaper (same labels either way)
        self.sync_free = self.device.type != "cpu" if sync_free is None else bool(sync_free)
        self.classes_: Optional[torch.Tensor] = None
        self._x = self._y = self._x_sq = None
        self._sk = None

    @property
    def is_fitted(self) -> bool:
        return self.classes_ is not None

    @property
    def num_train(self) -> int:
        return 0 if self._x is None else int(self._x.shape[0])

    def fit(self, tokens: torch.Tensor, labels: torch.Tensor,
            classes: Optional[torch.Tensor] = None) -> "KNNContextModel":
        """Learn ``labels`` [n] of ``tokens`` [n, C].  ``classes``: the sorted label values that can occur
        (a superset of ``labels``' values), given by callers that know them: then no ``unique`` runs
        (a host synchronisation on a GPU).  Classes without tokens get no votes, so they never win and the
        result is the same as with the present classes only."""
        if tokens.ndim != 2 or labels.ndim != 1 or tokens.shape[0] != labels.shape[0]:
            raise InputError(f"KNN fit needs tokens [n, C] and labels [n]; got {tuple(tokens.shape)} and "
                             f"{tuple(labels.shape)}.", "Flatten frames and labels consistently.")
        if tokens.shape[0] == 0:
            raise InputError("The context model has no labelled tokens to learn from.",
                             "Give a reference with labels that cover at least one cluster.")
        if not bool(torch.isfinite(tokens).all()):
            raise InputError("Context-model features contain NaN or infinite values.",
                             "Check the feature extraction (precision overflow?).")
        if classes is None:
            classes, y = torch.unique(labels.long(), sorted=True, return_inverse=True)
        else:
            classes = classes.to(device=labels.device, dtype=torch.long)
            y = torch.searchsorted(classes, labels.long())
        self.classes_ = classes.to(self.device)
        if self.impl == "sklearn":
            from sklearn.neighbors import KNeighborsClassifier

            self._sk = KNeighborsClassifier(n_neighbors=min(self.n_neighbors, int(tokens.shape[0])))
            self._sk.fit(tokens.detach().cpu().float().numpy(), labels.long().cpu().numpy())
            self._x = tokens  # kept only for num_train / memory accounting parity
            return self
        self._x = _owned(tokens, self.device, self.dtype)
        self._x_sq = (self._x * self._x).sum(1)
        self._y = y.to(self.device)
        return self

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        """Label values [m] (int64, on the model's device; CPU for ``impl="sklearn"``) for ``tokens`` [m, C]."""
        if not self.is_fitted:
            raise InputError("The context model is not initialised.", "Call init()/fit() first.")
        if tokens.ndim != 2 or tokens.shape[1] != self._x.shape[1]:
            raise InputError(f"Tokens {tuple(tokens.shape)} do not match the context model's "
                             f"{int(self._x.shape[1])} channels.", "Use features from the same backbone and blocks.")
        if not bool(torch.isfinite(tokens).all()):
            raise InputError("Context-model features contain NaN or infinite values.",
                             "Check the feature extraction (precision overflow?).")
        if self.impl == "sklearn":
            return torch.from_numpy(self._sk.predict(tokens.detach().cpu().float().numpy())).long()
        L = int(self.classes_.numel())
        k = min(self.n_neighbors, self.num_train)
        out = torch.empty(tokens.shape[0], dtype=torch.long, device=self.device)
        for start in range(0, tokens.shape[0], self.chunk_size):  # with sync_free no host decision inside
            q = tokens[start:start + self.chunk_size].to(device=self.device, dtype=self.dtype)
            d = torch.addmm(self._x_sq[None, :], q, self._x.T, beta=1.0, alpha=-2.0)
            d.add_((q * q).sum(1, keepdim=True)).clamp_(min=0)
            idx = smallest_k(d, k, self.sync_free)  # equal distances at the k-th neighbour: smallest indices
            votes = one_hot_mask(self._y[idx], L).sum(1)
            out[start:start + q.shape[0]] = votes.argmax(1)  # first maximum = smallest label
        return self.classes_[out]


class SceneContext:
    """Streaming scene context model: ``init`` once, then ``step`` batch by batch (O(batch) memory)."""

    def __init__(self, n_neighbors: int = 4, refiner="cbr", device="cpu", knn_impl: str = "torch",
                 dtype=torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        self.refiner: Refiner = get_refiner(refiner)
        self.knn = KNNContextModel(n_neighbors, knn_impl, self.device, dtype)
        self.table: Optional[LabelTable] = None
        self.assignment: Optional[ClusterAssignment] = None
        self.grid: Optional[Tuple[int, int]] = None
        self.channels: Optional[int] = None
        self.kmeans_inertia: Optional[float] = None
        self.kmeans_centers: Optional[torch.Tensor] = None
        self.last_knn_labels: Optional[torch.Tensor] = None
        self._classes: Optional[torch.Tensor] = None
        self.steps = 0

    # ------------------------------------------------------------ init
    def init(self, features: torch.Tensor, reference_mask=None, reference_frame: int = 0, num_clusters: int = 20,
             n_init: int = 10, seed: int = 1, kmeans_impl: str = "torch",
             void_values: Sequence[int] = DEFAULT_VOID, assign_void: bool = False,
             frame_size: Optional[Tuple[int, int]] = None, names: Optional[Dict[int, str]] = None) -> LabelTable:
        """KMeans on all tokens of ``features`` [T, h, w, C]; name the clusters of frame ``reference_frame``
        (index into ``features``) from ``reference_mask`` (a label mask, or None = cluster ids); fit the KNN on
        that frame's tokens.  Returns the :class:`LabelTable`."""
        feats = self._check_features(features, "init features", first=True)
        T, h, w, C = feats.shape
        if not (0 <= int(reference_frame) < T):
            raise InputError(f"Reference frame {reference_frame} is outside the {T} frames given to init.",
                             f"Use an index in 0..{T - 1}.")
        ref = None
        if reference_mask is not None:
            ref = prepare_reference(reference_mask, (h, w), frame_size, void_values, assign_void)
        km = fit_kmeans(feats.reshape(-1, C), num_clusters, n_init=n_init, seed=seed, impl=kmeans_impl,
                        device=self.device)
        clusters = km.labels.reshape(T, h, w)[int(reference_frame)]
        assignment = assign_labels(clusters, num_clusters, ref, void_values, assign_void)
        note_grid_losses(assignment, reference_mask, ref, void_values, assign_void)
        self.kmeans_inertia = km.inertia
        self.kmeans_centers = km.centers  # [K, C]: the clusters a label bank links later shots to
        return self.init_from_assignment(feats[int(reference_frame)], clusters, assignment, names)

    def init_from_assignment(self, frame_features: torch.Tensor, clusters: torch.Tensor,
                             assignment: ClusterAssignment, names: Optional[Dict[int, str]] = None,
                             table: Optional[LabelTable] = None) -> LabelTable:
        """The second half of :meth:`init`, for callers that ran KMeans and named the clusters themselves
        (the ComfyUI stage nodes): fit the KNN on the reference frame's tokens ``frame_features`` [h, w, C]
        labelled through ``assignment`` from its cluster map ``clusters`` [h, w].  Returns the label table
        (``table`` if given, else built from the assignment and ``names``)."""
        if not isinstance(frame_features, torch.Tensor) or frame_features.ndim != 3:
            raise InputError(f"Reference-frame features must be [h, w, C]; got "
                             f"{tuple(getattr(frame_features, 'shape', ())) or type(frame_features).__name__}.",
                             "Pass the features of the frame the clusters were named on.")
        feats = self._check_features(frame_features[None], "reference-frame features", first=True)[0]
        h, w, C = feats.shape
        clusters = torch.as_tensor(clusters).long().cpu()
        if tuple(clusters.shape) != (h, w):
            raise InputError(f"The cluster map {tuple(clusters.shape)} does not match the feature grid {(h, w)}.",
                             "Use the clusters and features of the same frame.")
        size = max([int(clusters.max()) + 1] + [int(c) + 1 for c in assignment.mapping])
        lut = torch.full((size,), -1, dtype=torch.long)
        for c, v in assignment.mapping.items():
            lut[c] = v
        lab = lut[clusters.reshape(-1)].to(feats.device)
        keep = lab >= 0
        self.table = table if table is not None else LabelTable.from_values(assignment.mapping.values(), names,
                                                                            assignment.kind)
        # every value the KNN can meet, sorted: refits need no unique() (a host synchronisation on a GPU)
        self._classes = torch.tensor(sorted(set(self.table.values) | set(assignment.mapping.values())),
                                     dtype=torch.long, device=self.device)
        self.knn.fit(feats.reshape(-1, C)[keep], lab[keep], self._classes)
        self.assignment = assignment
        self.grid, self.channels = (h, w), C
        self.steps = 0
        return self.table

    # ------------------------------------------------------------ step
    def step(self, aggregated: torch.Tensor, correspondence: torch.Tensor, write_offset: int = 0) -> torch.Tensor:
        """Label one batch (KNN of the previous state), refine it, make it the new state.

        Returns the refined labels of frames ``write_offset..T-1`` (int64, on the context's device: the
        features, KNN labels and refined labels stay there; nothing in the step waits for the device
        except the input checks).
        """
        if self.table is None:
            raise InputError("The scene context is not initialised.", "Call init(first_batch_features, ...) first.")
        agg = self._check_features(aggregated, "aggregated features")
        corr = self._check_features(correspondence, "correspondence features", channels=False)
        T, h, w, C = agg.shape
        if corr.shape[:3] != agg.shape[:3]:
            raise InputError(f"Aggregated {tuple(agg.shape[:3])} and correspondence {tuple(corr.shape[:3])} "
                             "features disagree on frames/grid.", "Pass both feature sets of the same frames.")
        if not (0 <= int(write_offset) < T):
            raise InputError(f"write_offset {write_offset} is outside the batch of {T} frames.",
                             "Use Batch.write_offset from plan_batches.")
        tokens = agg.reshape(-1, C)
        knn = self.knn.predict(tokens).reshape(T, h, w).to(self.device)
        refined = self.refiner.refine(knn, corr)
        if refined.shape != knn.shape:
            raise InputError(f"Refiner {self.refiner!r} returned shape {tuple(refined.shape)} for {tuple(knn.shape)}.",
                             "Fix the Refiner: it must keep [T, h, w].")
        refined = refined.to(self.device, torch.long)
        self.knn.fit(tokens, refined.reshape(-1), self._classes)  # autoregressive: replaces the previous batch
        self.last_knn_labels = knn[int(write_offset):]
        self.steps += 1
        return refined[int(write_offset):]

    def refit(self, aggregated: torch.Tensor, labels: torch.Tensor) -> None:
        """Replace the KNN state by ``labels`` [T, h, w] of the batch ``aggregated`` [T, h, w, C] (labels
        corrected after :meth:`step`, e.g. at a seam between batches)."""
        agg = self._check_features(aggregated, "aggregated features")
        self.knn.fit(agg.reshape(-1, agg.shape[-1]), labels.reshape(-1).to(self.device, torch.long), self._classes)

    def run(self, batches: Iterable[Tuple[torch.Tensor, torch.Tensor, int]]) -> Iterator[torch.Tensor]:
        """Stream ``(aggregated, correspondence, write_offset)`` batches; yields labels per batch."""
        for agg, corr, off in batches:
            yield self.step(agg, corr, off)

    def state_nbytes(self) -> int:
        """Bytes of features the context holds (one batch of tokens at most)."""
        x = self.knn._x
        return 0 if x is None else x.numel() * x.element_size()

    # ------------------------------------------------------------ checks
    def _check_features(self, x, what, first=False, channels=True) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{what} must be a torch tensor [T, h, w, C], got {type(x).__name__}.",
                             "Pass VideoFeatures tensors.")
        if x.ndim != 4:
            raise InputError(f"{what} must be [T, h, w, C]; got shape {tuple(x.shape)}.", "Pass 4-D frame features.")
        if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
            raise InputError(f"{what} are empty (shape {tuple(x.shape)}).", "Give at least one frame.")
        if not x.is_floating_point():
            raise InputError(f"{what} must be floating point, got {x.dtype}.", "Pass float features.")
        if not first:
            if tuple(x.shape[1:3]) != self.grid:
                raise InputError(f"{what} have grid {tuple(x.shape[1:3])} but the context model was initialised "
                                 f"on grid {self.grid}.", "Extract every batch at the same working size.")
            if channels and int(x.shape[3]) != self.channels:
                raise InputError(f"{what} have {int(x.shape[3])} channels, the context model {self.channels}.",
                                 "Use the same backbone and blocks for every batch.")
        return x.to(device=self.device, dtype=self.dtype)


def coarse_segment(features, k: int = 20, batch_size: int = 14, refiner="cbr", reference_mask=None,
                   reference_frame: int = 0, seed: int = 1, n_init: int = 10, n_neighbors: int = 4,
                   kmeans_impl: str = "torch", knn_impl: str = "torch", void_values: Sequence[int] = DEFAULT_VOID,
                   assign_void: bool = False, names: Optional[Dict[int, str]] = None, device="cpu",
                   tail: str = "overlap", progress: Optional[Callable[[int, int], None]] = None
                   ) -> CoarseSegmentation:
    """Coarse label maps for a whole video (paper §4.1-4.2).

    ``reference_mask``: label mask of frame ``reference_frame`` (paper: first-frame GT), any size (resized
    nearest to the grid; a size other than the frames' warns); None = cluster ids as labels.
    ``refiner``: "cbr" (paper Eqs 3-5), "cbr_compat" (authors' code), "none", or a Refiner.
    ``progress(done_frames, total_frames)`` is called after every batch.
    """
    from .video_features import VideoFeatures

    if not isinstance(features, VideoFeatures):
        raise InputError(f"coarse_segment needs VideoFeatures, got {type(features).__name__}.",
                         "Wrap tensors as VideoFeatures(aggregated, correspondence, frame_size, work_size).")
    N = features.num_frames
    if N == 0:
        raise InputError("The video has no frames (empty features).", "Extract features of at least one frame.")
    if not (0 <= int(reference_frame) < N):
        raise InputError(f"Reference frame {reference_frame} is outside the video's {N} frames.",
                         f"Use an index in 0..{N - 1}.")
    batches = plan_batches(N, batch_size, tail)
    rb = next(b for b in batches if b.write_start <= reference_frame < b.stop)
    ctx = SceneContext(n_neighbors, refiner, device, knn_impl)
    table = ctx.init(features.aggregated[rb.start:rb.stop], reference_mask, int(reference_frame) - rb.start, k,
                     n_init, seed, kmeans_impl, void_values, assign_void, features.frame_size, names)
    h, w = features.grid
    out = torch.empty(N, h, w, dtype=torch.long)
    for b in batches:
        out[b.write_start:b.stop] = ctx.step(features.aggregated[b.start:b.stop],
                                             features.correspondence[b.start:b.stop], b.write_offset)
        if progress is not None:
            progress(b.stop, N)
    meta = {
        "k": k, "seed": seed, "n_init": n_init, "n_neighbors": n_neighbors, "batch_size": batch_size,
        "tail": tail, "kmeans_impl": kmeans_impl, "knn_impl": knn_impl, "refiner": repr(ctx.refiner),
        "reference": reference_mask is not None, "reference_frame": int(reference_frame),
        "kmeans_batch": (rb.start, rb.stop), "kmeans_inertia": ctx.kmeans_inertia,
        "cluster_to_label": dict(ctx.assignment.mapping), "lost_labels": list(ctx.assignment.lost_labels),
        "void_values": [int(v) for v in void_values], "assign_void": assign_void,
        "grid": (h, w), "frame_size": tuple(features.frame_size), "work_size": tuple(features.work_size),
        "backbone": features.backbone, "batches": [(b.start, b.stop, b.write_start) for b in batches],
    }
    return CoarseSegmentation(out, table, list(ctx.assignment.unassigned_clusters), meta)
