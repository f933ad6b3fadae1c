"""Naming labels: each word's map averaged inside each label's mask over the whole video.

:class:`NameScores` adds, batch after batch, the per-pixel word scores ``A(p, w)``
(:mod:`.cross_attention`, each pixel's scores sum to one over the words) of every cell of each label's
coarse mask at the feature grid.  At the end a label's score for word ``w`` is the mean of ``A(., w)``
over its cells in every frame; its name is the best word, kept only when that score reaches the threshold
(default: twice the chance level ``1/W``, or halfway from chance to certainty where that is lower); a label below it stays unnamed.  A reference mask's names are
never replaced (:func:`apply_names` reports the words but keeps the names).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from ..errors import InputError
from ..labels import LabelEntry, LabelTable
from .vocabulary import Vocabulary

#: the default threshold, as a multiple of the chance level 1/W
DEFAULT_CHANCE_MULTIPLE = 2.0


def default_threshold(num_words: int) -> float:
    """Twice the chance level ``1/W``, or halfway from chance to certainty where that is lower (W = 2)."""
    chance = 1.0 / max(1, num_words)
    return min(DEFAULT_CHANCE_MULTIPLE * chance, (1.0 + chance) / 2)


def check_threshold(value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise InputError(f"The naming threshold {value} is outside 0..1.",
                         "Give a mean word score in 0..1 (e.g. 0.05), or leave it out for twice the chance level.")
    return v


@dataclass
class LabelName:
    value: int
    word: str  # the best word
    score: float  # its mean score inside the label, 0..1
    named: bool  # score >= threshold
    runner_up: Optional[str] = None
    runner_up_score: Optional[float] = None
    cells: int = 0

    def to_dict(self) -> dict:
        return {"value": self.value, "word": self.word, "score": round(self.score, 6), "named": self.named,
                "runner_up": self.runner_up,
                "runner_up_score": None if self.runner_up_score is None else round(self.runner_up_score, 6),
                "cells": self.cells}


class NameScores:
    """Per-label sums of the word scores over the video (memory: labels x words)."""

    def __init__(self, vocabulary: Vocabulary):
        if len(vocabulary) < 2:
            raise InputError(f"Naming compares words, and the vocabulary has {len(vocabulary)}.",
                             "Give at least two words (add e.g. 'background' or 'thing').")
        self.vocabulary = vocabulary
        self.sums: Dict[int, torch.Tensor] = {}
        self.cells: Dict[int, int] = {}

    def add(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """``scores [T, h, w, W]`` and the coarse labels ``[T, h, w]`` of the same frames and grid."""
        if scores.shape[:3] != labels.shape or scores.shape[-1] != len(self.vocabulary):
            raise ValueError(f"word scores {tuple(scores.shape)} do not fit labels {tuple(labels.shape)}")
        flat = scores.reshape(-1, scores.shape[-1]).float().cpu()
        lab = labels.reshape(-1).long().cpu()
        values, inverse = torch.unique(lab, return_inverse=True)
        sums = torch.zeros(len(values), flat.shape[-1]).index_add_(0, inverse, flat)
        counts = torch.bincount(inverse, minlength=len(values))
        for i, v in enumerate(values.tolist()):
            self.sums[v] = self.sums.get(v, 0) + sums[i]
            self.cells[v] = self.cells.get(v, 0) + int(counts[i])

    def mean_scores(self) -> Dict[int, torch.Tensor]:
        return {v: total / self.cells[v] for v, total in self.sums.items() if self.cells[v]}

    def names(self, threshold: Optional[float] = None) -> Dict[int, LabelName]:
        thr = default_threshold(len(self.vocabulary)) if threshold is None else float(threshold)
        words = self.vocabulary.names
        out = {}
        for v, mean in sorted(self.mean_scores().items()):
            top = torch.topk(mean, 2)
            s0, s1 = (float(x) for x in top.values)
            i0, i1 = (int(i) for i in top.indices)
            out[v] = LabelName(v, words[i0], s0, s0 >= thr, words[i1], s1, self.cells[v])
        return out


def apply_names(table: LabelTable, names: Dict[int, LabelName]) -> LabelTable:
    """The table with each cluster called by its word (when named); a reference's table ("label") is unchanged."""
    if table.kind != "cluster":
        return table
    entries: List[LabelEntry] = []
    for e in table.entries:
        n = names.get(e.value)
        if n is not None and n.named:
            entries.append(LabelEntry(e.index, e.value, n.word, e.color, n.score))
        else:
            entries.append(e)
    return LabelTable(entries, table.kind)
