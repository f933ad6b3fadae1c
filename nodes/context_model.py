"""KNN Context Model (``VidSegKNNContextModel``): coarse labels of the whole video (paper §4.1-4.2).

The loop: the KNN is fitted on the named reference frame; each batch is labelled
by the KNN, refined (CBR), and the refined labels become the KNN's new training
set for the next batch (docs/design/authors_code.md#label-assignment-and-the-scene-context-model).
"""
from __future__ import annotations

import torch

from ..vidseg_core.batching import plan_batches
from ..vidseg_core.context_model import SceneContext
from ..vidseg_core.errors import InputError
from ..vidseg_core.labels import LabelTable, assign_labels
from ..vidseg_core.refiners import CBRRefiner, Refiner
from ..vidseg_core.video_features import VideoFeatures
from .comfy_adapters import bridge
from .schema import Combo, Int, Node, Out, Socket
from .sockets import VIDSEG_CLUSTERS, VIDSEG_FEATURES, VIDSEG_LABELS, VIDSEG_REFINER, VIDSEG_SHOTS, Clusters, Labels


class VidSegKNNContextModel:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegKNNContextModel", "KNN Context Model (VidSeg)", "VidSeg/stages",
            "The scene context model (paper §4.1): a KNN (k = 4) over feature tokens, fitted on the named reference "
            "frame, labels each batch; the refiner (CBR Refine; default: the paper's CBR) corrects the batch and the "
            "corrected labels refit the KNN for the next batch. Output: coarse label maps at the feature grid (frame "
            "size / 16).",
            inputs=(
                Socket("features", VIDSEG_FEATURES, "Features from Extract Block Features."),
                Socket("clusters", VIDSEG_CLUSTERS, "Named clusters from Assign Labels (unnamed clusters from KMeans "
                                                    "Init use the cluster ids as labels)."),
                Int("n_neighbors", 4, 1, 64, "k of the KNN classifier (authors: 4).", advanced=True),
                Combo("implementation", ("torch", "sklearn"), "torch runs on ComfyUI's device; sklearn is the CPU "
                                                              "reference.", default="torch", advanced=True),
                Socket("refiner", VIDSEG_REFINER, "Refinement from CBR Refine; not connected = the paper's CBR.",
                       optional=True),
                Socket("shots", VIDSEG_SHOTS, "Shots from Detect Cuts (or Segment Video): batches follow the shots, "
                                              "each shot gets its own KMeans, labels are linked across shots (a "
                                              "scene that comes back gets its labels back). Connect the same shots "
                                              "to KMeans Init. Not connected = one shot (the paper).", optional=True),
            ),
            outputs=(Out("coarse_labels", VIDSEG_LABELS, "Coarse label maps [T, H/16, W/16] of every frame with the "
                                                         "label table."),),
            function="propagate", search_aliases=("propagate labels", "knn", "scene context", "track labels"))

    def propagate(self, features, clusters, n_neighbors=4, implementation="torch", refiner=None, shots=None):
        if not isinstance(features, VideoFeatures):
            raise InputError(f"Expected VidSeg features, got {type(features).__name__}.",
                             "Connect the output of Extract Block Features.")
        if not isinstance(clusters, Clusters):
            raise InputError(f"Expected VidSeg clusters, got {type(clusters).__name__}.",
                             "Connect the output of Assign Labels (or KMeans Init).")
        if refiner is not None and not isinstance(refiner, Refiner):
            raise InputError(f"Expected a VidSeg refiner, got {type(refiner).__name__}.", "Connect CBR Refine.")
        n = features.num_frames
        if clusters.grid != features.grid or clusters.batch_stop > n:
            raise InputError(f"The clusters (grid {clusters.grid}, frames up to {clusters.batch_stop}) do not belong "
                             f"to these features (grid {features.grid}, {n} frames).",
                             "Use clusters computed from the same features.")
        assignment, table = clusters.assignment, clusters.table
        frame = clusters.reference_frame
        if assignment is None:  # not named: cluster ids are the labels
            assignment = assign_labels(clusters.frame_clusters(frame), clusters.num_clusters)
            table = LabelTable.from_values(assignment.mapping.values(), None, assignment.kind)
        batch_size = int(clusters.meta.get("batch_size") or features.meta.get("batch_size") or 14)
        if shots is not None:
            return (with_shots(features, clusters, assignment, table, batch_size, n_neighbors, implementation,
                               refiner, shots),)
        batches = plan_batches(n, batch_size)
        progress = bridge.Progress(n)
        progress(0, n)
        ctx = SceneContext(n_neighbors, refiner if refiner is not None else CBRRefiner(), bridge.torch_device(),
                           implementation)
        ctx.init_from_assignment(features.aggregated[frame], clusters.frame_clusters(frame), assignment, table=table)
        h, w = features.grid
        out = torch.empty(n, h, w, dtype=torch.long)
        for b in batches:
            progress(b.write_start, n)
            out[b.write_start:b.stop] = ctx.step(features.aggregated[b.start:b.stop],
                                                 features.correspondence[b.start:b.stop], b.write_offset)
        progress(n, n)
        meta = {"batch_size": batch_size, "seed": features.meta.get("seed"), "backbone": features.backbone,
                "refiner": repr(ctx.refiner), "n_neighbors": n_neighbors, "reference_frame": frame,
                "work_size": tuple(features.work_size)}
        return (Labels(out, table, tuple(features.frame_size), True, meta),)


def with_shots(features, clusters, assignment, table, batch_size, n_neighbors, implementation, refiner, shots):
    """The shot-aware driver (:func:`~vidseg_core.shot_context.coarse_segment_shots`) anchored on the given
    clusters; the cuts are those of ``shots`` (and, with detection on the frames, the feature check's)."""
    from ..vidseg_core.pipeline import SegmentSettings
    from ..vidseg_core.shot_context import coarse_segment_shots
    from ..vidseg_core.shots import shots_from_cuts
    from .shot_inputs import require_shots, settings_of

    n = features.num_frames
    shots = require_shots(shots, n)
    found = shots_from_cuts(n, shots["frame_cuts"])
    frame = clusters.reference_frame
    home = next(sh for sh in found if sh.start <= frame < sh.stop)
    if not (home.start <= clusters.batch_start and clusters.batch_stop <= home.stop):
        raise InputError(f"The clusters come from frames {clusters.batch_start}..{clusters.batch_stop - 1}, which "
                         f"leave the reference frame's shot (frames {home.start}..{home.stop - 1}).",
                         "Connect the same shots to KMeans Init: it then clusters a batch inside the shot.")
    centers = clusters.centers
    if centers is None:  # clusters made elsewhere: the means of their tokens
        feats = features.aggregated[clusters.batch_start:clusters.batch_stop].float()
        feats = feats.reshape(-1, feats.shape[-1])
        ids = clusters.clusters.reshape(-1)
        centers = torch.zeros(clusters.num_clusters, feats.shape[1]).index_add_(0, ids, feats)
        centers /= torch.bincount(ids, minlength=clusters.num_clusters).clamp(min=1)[:, None]
    meta = clusters.meta
    settings = SegmentSettings(num_clusters=clusters.num_clusters, batch_size=batch_size,
                               n_init=int(meta.get("n_init", 10)), seed=int(meta.get("kmeans_seed", 1)),
                               kmeans_impl=meta.get("implementation", "torch"),
                               refiner=refiner if refiner is not None else CBRRefiner(), reference_frame=frame,
                               names={e.value: e.name for e in table}, shots=settings_of(shots))
    progress = bridge.Progress(n)
    out, bank_table, summary = coarse_segment_shots(
        features, settings, batch_size, device=bridge.torch_device(),
        shots=(found, list(shots["frame_cuts"]), shots["cut_detection"]),
        clustered_reference=(clusters.frame_clusters(frame), assignment, table, centers), progress=progress,
        n_neighbors=n_neighbors, knn_impl=implementation)
    meta = {"batch_size": batch_size, "seed": features.meta.get("seed"), "backbone": features.backbone,
            "refiner": repr(settings.refiner), "n_neighbors": n_neighbors, "reference_frame": frame,
            "work_size": tuple(features.work_size), "shots": summary}
    return Labels(out, bank_table, tuple(features.frame_size), True, meta)


NODES = (VidSegKNNContextModel,)
