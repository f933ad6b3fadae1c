"""The per-frame diffusion features of a video (paper §4.1, docs/design/authors_code.md#feature-capture).

``VideoFeatures`` is what feature extraction produces and what the scene
context model and the correspondence-based refinement consume:

* ``aggregated`` ``[N, h, w, C]``: the spatial self-attention queries of decoder
  blocks 6, 7, 8 at the feature step (conditional half), averaged element-wise
  and divided per token by its max-abs value over channels (the authors'
  normalisation, *not* L2).  Used by KMeans and the KNN context model.
* ``correspondence`` ``[N, h, w, C]``: block 7's queries alone, not normalised
  (CBR uses cosine similarity, paper Eq. 3).

The grid ``(h, w)`` is the working size / 16, the working size is the frame
size rounded *down* to multiples of 64 (no crop).  Tensors live on the CPU in
a compact dtype (float16 by default) so memory is bounded by the video length
times a small constant.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

import torch

from .errors import InputError


@dataclass
class VideoFeatures:
    aggregated: torch.Tensor
    correspondence: torch.Tensor
    frame_size: Tuple[int, int]  # original (H, W)
    work_size: Tuple[int, int]  # (H, W) rounded down to multiples of 64
    backbone: str = "unknown"
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.aggregated.ndim != 4 or self.correspondence.ndim != 4:
            raise InputError(
                f"Features must be [N, h, w, C]; got {tuple(self.aggregated.shape)} and "
                f"{tuple(self.correspondence.shape)}.",
                "Extract them with vidseg_core.features.extract_features.",
            )
        if self.aggregated.shape[:3] != self.correspondence.shape[:3]:
            raise InputError(
                f"Aggregated and correspondence features disagree on frames/grid: "
                f"{tuple(self.aggregated.shape[:3])} vs {tuple(self.correspondence.shape[:3])}.",
                "Use features from one extraction run.",
            )
        self.frame_size = tuple(int(x) for x in self.frame_size)
        self.work_size = tuple(int(x) for x in self.work_size)

    @property
    def num_frames(self) -> int:
        return int(self.aggregated.shape[0])

    @property
    def grid(self) -> Tuple[int, int]:
        return int(self.aggregated.shape[1]), int(self.aggregated.shape[2])

    def __len__(self) -> int:
        return self.num_frames

    def slice(self, start: int, stop: int) -> "VideoFeatures":
        return VideoFeatures(
            self.aggregated[start:stop], self.correspondence[start:stop],
            self.frame_size, self.work_size, self.backbone, dict(self.meta),
        )

    # ------------------------------------------------------------------ I/O
    def save(self, path) -> None:
        """Write a ``.safetensors`` file (tensors + JSON metadata)."""
        from safetensors.torch import save_file

        meta = {
            "format": "vidseg-features-1",
            "frame_size": json.dumps(list(self.frame_size)),
            "work_size": json.dumps(list(self.work_size)),
            "backbone": self.backbone,
            "meta": json.dumps(self.meta, default=str),
        }
        save_file(
            {"aggregated": self.aggregated.contiguous(), "correspondence": self.correspondence.contiguous()},
            str(path), metadata=meta,
        )

    @classmethod
    def load(cls, path) -> "VideoFeatures":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != "vidseg-features-1":
                    raise InputError(f"{path} is not a VidSeg feature file.",
                                     "Create one with `python -m vidseg_core features`.")
                agg = f.get_tensor("aggregated")
                corr = f.get_tensor("correspondence")
        except InputError:
            raise
        except Exception as exc:  # corrupt / not safetensors
            raise InputError(f"Cannot read feature file {path}: {exc}.",
                             "Re-create it with `python -m vidseg_core features`.") from exc
        return cls(agg, corr, tuple(json.loads(meta["frame_size"])), tuple(json.loads(meta["work_size"])),
                   meta.get("backbone", "unknown"), json.loads(meta.get("meta", "{}")))
