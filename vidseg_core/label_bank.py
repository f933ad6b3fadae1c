"""One label set across the shots of an edited video: a bank of the clusters seen so far.

At a cut the scene context model starts afresh (KMeans on the new shot's first batch).  Its clusters are
linked to the bank by feature similarity: the cosine similarity of cluster centroids (KMeans centres, in
the space of the aggregated features), one-to-one by an optimal assignment
(``scipy.optimize.linear_sum_assignment``, largest total similarity).  A pair at or above the threshold
takes the bank cluster's label (a returning scene gets its old ids, a reference mask's names carry over);
a cluster left without a partner gets a new label id, shared with the shot's other new clusters whose
centroid is as close to it as a link needs (KMeans splits a region in two more often than a scene holds
two regions that alike).  The new shot's clusters join the bank.

The bank also records which shots each label appears in and, per shot, how its clusters were linked
(the ``shots`` part of ``summary.json``, see :mod:`vidseg_core.shot_context`).
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .labels import LabelTable

#: label maps are stored as 8-bit images
MAX_LABEL = 255


class LabelBank:
    """Cluster centroids with their labels, the growing label table, and the per-shot link record."""

    def __init__(self, threshold: float = 0.8, names: Optional[Dict[int, str]] = None,
                 void_values: Sequence[int] = (255,)):
        self.threshold = float(threshold)
        self.names = dict(names or {})
        self.void = {int(v) for v in void_values}
        self.kind = "cluster"
        self._centroids: List[torch.Tensor] = []
        self._labels: List[int] = []
        self.values: List[int] = []
        self.shots: List[dict] = []
        self._presence: Dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def table(self) -> LabelTable:
        return LabelTable.from_values(self.values, self.names, self.kind)

    # ------------------------------------------------------------ filling
    def seed(self, centers: torch.Tensor, mapping: Dict[int, int], kind: str, shot: dict) -> None:
        """The clusters of the shot anchored as today (KMeans on the reference frame's batch, named by the
        reference mask or by first appearance): ``mapping`` cluster -> label value."""
        self.kind = kind
        for c, v in sorted(mapping.items()):
            self._add(centers[int(c)], int(v))
        shot = dict(shot, anchor="reference" if kind == "label" else "first frame",
                    clusters={str(c): int(v) for c, v in sorted(mapping.items())}, linked={}, new=sorted(set(mapping.values())))
        self.shots.append(shot)

    def link(self, centers: torch.Tensor, present: Sequence[int], shot: dict) -> Dict[int, int]:
        """Labels of a new shot's clusters ``present`` (KMeans centres ``centers`` [K, C]): old labels for the
        clusters matched to the bank at or above the threshold, new ids for the others."""
        from scipy.optimize import linear_sum_assignment

        present = [int(c) for c in present]
        mapping: Dict[int, int] = {}
        linked: Dict[str, dict] = {}
        if self._centroids and present:
            a = torch.nn.functional.normalize(centers[present].float().cpu(), dim=1)
            b = torch.nn.functional.normalize(torch.stack(self._centroids).float(), dim=1)
            sim = (a @ b.T).numpy().astype(np.float64)
            rows, cols = linear_sum_assignment(sim, maximize=True)
            for r, k in zip(rows, cols):
                if sim[r, k] >= self.threshold:
                    mapping[present[r]] = self._labels[k]
                    linked[str(present[r])] = {"label": self._labels[k], "similarity": round(float(sim[r, k]), 4)}
        else:
            sim = None
        new: List[int] = []
        fresh: List[int] = []  # clusters that opened a new label in this shot
        for i, c in enumerate(present):
            if c in mapping:
                continue
            twin = self._twin(centers, c, fresh)
            if twin is not None:  # as close to a new cluster of this shot as a link needs: the same label
                mapping[c] = mapping[twin]
                continue
            v = self._new_value()
            if v is None:  # no id left: the most similar label seen, said once
                k = int(np.argmax(sim[i]))
                v = self._labels[k]
                warnings.warn(f"no label id left (labels are 0..{MAX_LABEL}): a new scene's cluster joins label {v} "
                              "(most similar); use fewer clusters (--clusters) or fewer shots", UserWarning,
                              stacklevel=2)
            else:
                new.append(v)
                fresh.append(c)
                self.values.append(v)
            mapping[c] = v
        for c in present:
            self._add(centers[c], mapping[c])
        self.shots.append(dict(shot, anchor="linked", clusters={str(c): mapping[c] for c in present},
                               linked=linked, new=new))
        return mapping

    def _twin(self, centers: torch.Tensor, c: int, fresh: List[int]) -> Optional[int]:
        if not fresh:
            return None
        a = torch.nn.functional.normalize(centers[[c]].float().cpu(), dim=1)
        b = torch.nn.functional.normalize(centers[fresh].float().cpu(), dim=1)
        sim = (a @ b.T)[0]
        k = int(sim.argmax())
        return fresh[k] if float(sim[k]) >= self.threshold else None

    def _add(self, centroid: torch.Tensor, value: int) -> None:
        self._centroids.append(centroid.detach().float().cpu())
        self._labels.append(int(value))
        if int(value) not in self.values:
            self.values.append(int(value))

    def _new_value(self) -> Optional[int]:
        v = max(self.values, default=-1) + 1
        while v in self.void:
            v += 1
        return v if v <= MAX_LABEL else None

    # ------------------------------------------------------------ presence and summary
    def note_labels(self, shot_start: int, labels: torch.Tensor) -> None:
        """Record the label values in ``labels`` (written frames of the shot starting at ``shot_start``); on
        the labels' device (no host synchronisation)."""
        p = self._presence.get(shot_start)
        if p is None:
            p = self._presence[shot_start] = torch.zeros(MAX_LABEL + 1, dtype=torch.bool, device=labels.device)
        p[labels.reshape(-1).clamp(0, MAX_LABEL)] = True

    def label_shots(self) -> Dict[int, List[int]]:
        """label value -> the shots (by first frame) whose written frames contain it."""
        out: Dict[int, List[int]] = {v: [] for v in sorted(self.values)}
        for shot in sorted(self._presence):
            for v in torch.nonzero(self._presence[shot].cpu()).flatten().tolist():
                out.setdefault(int(v), []).append(shot)
        return out
