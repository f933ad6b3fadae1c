"""KMeans Init (``VidSegKMeansInit``): clusters of the reference batch that start the scene context model."""
from __future__ import annotations

from ..vidseg_core.batching import plan_batches
from ..vidseg_core.errors import InputError
from ..vidseg_core.kmeans import fit_kmeans
from ..vidseg_core.video_features import VideoFeatures
from .comfy_adapters import bridge
from .schema import Combo, Int, Node, Out, Socket
from .sockets import VIDSEG_CLUSTERS, VIDSEG_FEATURES, VIDSEG_SHOTS, Clusters


class VidSegKMeansInit:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegKMeansInit", "KMeans Init (VidSeg)", "VidSeg/stages",
            "KMeans on all feature tokens of the batch that holds the reference frame (paper §4.1: K = 20, 10 "
            "k-means++ runs). The clusters of the reference frame are then named by Assign Labels and seed the KNN "
            "context model.",
            inputs=(
                Socket("features", VIDSEG_FEATURES, "Features from Extract Block Features."),
                Int("num_clusters", 20, 1, 255, "K clusters (paper: 20 for VSPW, 5 in the authors' demo). Fewer "
                                                "clusters give coarser regions."),
                Int("reference_frame", 0, 0, 100000, "Index of the frame the reference mask belongs to (0 = first "
                                                     "frame); the batch that holds it is clustered."),
                Int("n_init", 10, 1, 100, "k-means++ restarts; the run with the lowest inertia wins (authors: 10).",
                    advanced=True),
                Int("seed", 1, 0, 0xFFFFFFFF, "Seed of the k-means++ initialisation.", control_after_generate=False,
                    advanced=True),
                Combo("implementation", ("torch", "sklearn"), "torch runs on ComfyUI's device (its own k-means++ "
                      "draws: a clustering of the same quality, not the authors'); sklearn runs on the CPU and with "
                      "seed 1 gives the authors' exact clustering.",
                      default="torch", advanced=True),
                Socket("shots", VIDSEG_SHOTS, "Shots from Detect Cuts (connect the same to KNN Context Model): the "
                                              "clustered batch is the reference frame's batch inside its shot. Not "
                                              "connected = one shot (the paper).", optional=True),
            ),
            outputs=(Out("clusters", VIDSEG_CLUSTERS, "KMeans cluster maps of the reference batch (not yet named)."),),
            function="cluster", search_aliases=("kmeans", "cluster features"))

    def cluster(self, features, num_clusters=20, reference_frame=0, n_init=10, seed=1, implementation="torch",
                shots=None):
        if not isinstance(features, VideoFeatures):
            raise InputError(f"Expected VidSeg features, got {type(features).__name__}.",
                             "Connect the output of Extract Block Features.")
        n = features.num_frames
        if not 0 <= reference_frame < n:
            raise InputError(f"reference_frame {reference_frame} is outside the video's {n} frames.",
                             f"Use an index in 0..{n - 1}.")
        bridge.check_interrupt()
        batch_size = int(features.meta.get("batch_size") or 14)
        rb = next(b for b in _plan(n, batch_size, shots) if b.write_start <= reference_frame < b.stop)
        feats = features.aggregated[rb.start:rb.stop].float()
        t, h, w, c = feats.shape
        km = fit_kmeans(feats.reshape(-1, c), num_clusters, n_init=n_init, seed=seed, impl=implementation,
                        device=bridge.torch_device())
        bridge.check_interrupt()
        clusters = km.labels.reshape(t, h, w).cpu()
        meta = {"batch_size": batch_size, "seed": features.meta.get("seed"), "n_init": n_init, "kmeans_seed": seed,
                "implementation": implementation, "backbone": features.backbone}
        return (Clusters(clusters, rb.start, rb.stop, int(num_clusters), int(reference_frame),
                         tuple(features.frame_size), float(km.inertia), meta=meta, centers=km.centers.cpu()),)


def _plan(n: int, batch_size: int, shots):
    """The batches of the video: the paper's, or per shot (the scene context model's with shots)."""
    if shots is None:
        return plan_batches(n, batch_size)
    from ..vidseg_core.shots import plan_shot_batches, shots_from_cuts
    from .shot_inputs import require_shots, settings_of

    shots = require_shots(shots, n)
    return plan_shot_batches(shots_from_cuts(n, shots["frame_cuts"]), batch_size, settings_of(shots).overlap)


NODES = (VidSegKMeansInit,)
