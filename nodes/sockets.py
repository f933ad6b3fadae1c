"""The pack's socket types and the small objects that flow through them.

Socket names are plain strings (compatible with V3's ``io.Custom("...")``):

* ``VIDSEG_MODEL``    -> :class:`ModelHandle` (a loaded backbone + its compute device);
* ``VIDSEG_FEATURES`` -> :class:`vidseg_core.video_features.VideoFeatures`;
* ``VIDSEG_CLUSTERS`` -> :class:`Clusters` (KMeans clusters of one batch, optionally named);
* ``VIDSEG_REFINER``  -> a :class:`vidseg_core.refiners.Refiner`;
* ``VIDSEG_LABELS``   -> :class:`Labels` (label maps, coarse or full resolution, + the label table);
* ``VIDSEG_SHOTS``    -> a plain dict: the shots of an edited video (Detect Cuts, Segment Video), keys

  - ``num_frames``: frames of the video; ``cut_detection``: ``frames`` (auto), ``user``, ``off`` (or
    ``features``: the feature check alone);
  - ``cuts``: the first frames of every new shot; ``frame_cuts``: those found on the frames (or given),
    ``feature_cuts``: those the features showed (Segment Video only);
  - ``shots``: per shot ``index``, ``start``, ``stop`` (and, from Segment Video, ``anchor``, ``clusters``,
    ``linked``, ``new``: how its labels were linked); ``label_shots``: label value (str) -> the shots whose
    frames contain it (empty from Detect Cuts);
  - ``settings``: the :class:`vidseg_core.shots.ShotSettings` used (thresholds, ``link_threshold``,
    ``overlap``), which KMeans Init and KNN Context Model run with.

Objects are never modified after a node returned them (ComfyUI caches outputs
and hands the same object to every consumer): nodes build new ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..vidseg_core.errors import InputError
from ..vidseg_core.labels import ClusterAssignment, LabelTable

VIDSEG_MODEL = "VIDSEG_MODEL"
VIDSEG_FEATURES = "VIDSEG_FEATURES"
VIDSEG_CLUSTERS = "VIDSEG_CLUSTERS"
VIDSEG_REFINER = "VIDSEG_REFINER"
VIDSEG_LABELS = "VIDSEG_LABELS"
VIDSEG_SHOTS = "VIDSEG_SHOTS"

CUSTOM_TYPES = (VIDSEG_MODEL, VIDSEG_FEATURES, VIDSEG_CLUSTERS, VIDSEG_REFINER, VIDSEG_LABELS, VIDSEG_SHOTS)


@dataclass
class ModelHandle:
    """What the loader returns: the backbone, where it computes, and how it was loaded."""

    backbone: Any  # vidseg_core.backbones.Backbone
    name: str
    device: torch.device
    dtype: torch.dtype

    @property
    def family(self) -> str:
        return getattr(self.backbone, "family", "?")

    def __repr__(self) -> str:
        return f"ModelHandle({self.name!r}, {self.family}, {self.device}, {self.dtype})"


@dataclass
class Clusters:
    """KMeans clusters of the batch holding the reference frame (paper §4.1), optionally named.

    ``clusters`` [b, h, w] are the cluster ids of frames ``batch_start..batch_stop``;
    ``reference_frame`` is the (video) frame whose clusters name the labels and train
    the scene context model.  ``assignment`` / ``table`` are set by Assign Labels.
    """

    clusters: torch.Tensor
    batch_start: int
    batch_stop: int
    num_clusters: int
    reference_frame: int
    frame_size: Tuple[int, int]
    inertia: float
    assignment: Optional[ClusterAssignment] = None
    table: Optional[LabelTable] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    #: [K, C] the KMeans centres (a shot-aware KNN Context Model seeds its label bank with them)
    centers: Optional[torch.Tensor] = None

    @property
    def grid(self) -> Tuple[int, int]:
        return int(self.clusters.shape[1]), int(self.clusters.shape[2])

    @property
    def named(self) -> bool:
        return self.assignment is not None

    def __repr__(self) -> str:  # short: ComfyUI prints node inputs in error reports
        state = f"named, {len(self.table)} labels" if self.named else "not named"
        return (f"Clusters(K={self.num_clusters}, frames {self.batch_start}..{self.batch_stop - 1}, grid {self.grid}, "
                f"reference frame {self.reference_frame}, {state})")

    def frame_clusters(self, frame: int) -> torch.Tensor:
        """Cluster map [h, w] of video frame ``frame`` (must lie in the clustered batch)."""
        if not self.batch_start <= frame < self.batch_stop:
            raise InputError(f"Frame {frame} is not in the clustered batch (frames {self.batch_start}.."
                             f"{self.batch_stop - 1}).",
                             "Set KMeans Init's reference_frame to the frame the reference mask belongs to.")
        return self.clusters[frame - self.batch_start]


@dataclass
class Labels:
    """Label maps of a whole video with their label table.

    ``labels`` int64 [T, h, w] (coarse: the feature grid) or [T, H, W] (full resolution);
    ``frame_size`` = (H, W) of the input frames; ``meta`` carries what later stages need
    (the feature batch size and seed, so masked modulation re-creates the same noisy latents).
    """

    labels: torch.Tensor
    table: LabelTable
    frame_size: Tuple[int, int]
    coarse: bool
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.labels.shape[0])

    def full_resolution(self) -> torch.Tensor:
        """int64 [T, H, W] at the frames' size (coarse maps are resized nearest-neighbour)."""
        lab = self.labels
        H, W = self.frame_size
        if tuple(lab.shape[1:]) == (H, W):
            return lab
        out = F.interpolate(lab[:, None].float(), size=(H, W), mode="nearest-exact")[:, 0]
        return out.round().long()

    def __repr__(self) -> str:  # short: ComfyUI prints node inputs in error reports
        return f"Labels({self.describe()})"

    def describe(self) -> str:
        kind = "coarse" if self.coarse else "full-resolution"
        h, w = self.labels.shape[1:]
        entries = ", ".join(f"{e.value}={e.name}" for e in self.table)
        return f"{self.num_frames} {kind} label maps {w}x{h} ({len(self.table)} {self.table.kind}s: {entries})"


def require(value, what: str, node_hint: str):
    """A missing optional socket value -> readable error."""
    if value is None:
        raise InputError(f"{what} is missing.", node_hint)
    return value


def require_labels(labels) -> Labels:
    if not isinstance(labels, Labels):
        raise InputError(f"Expected VidSeg labels (VIDSEG_LABELS), got {type(labels).__name__}.",
                         "Connect the labels output of KNN Context Model, Masked Modulation, Guided Upsample, "
                         "CBR Refine (with its optional inputs) or Segment Video.")
    return labels


KEEP_MODEL_TOOLTIP = ("Keep the model on the compute device after this node (faster next run, holds VRAM). "
                      "Off: move it to ComfyUI's offload device and free the cache.")
MODEL_TOOLTIP = ("The VidSeg model: from VidSeg Model from ComfyUI (recommended: ComfyUI's own Load Checkpoint / "
                 "Image Only Checkpoint Loader, with its model management) or from Load SD/SVD (VidSeg).")
