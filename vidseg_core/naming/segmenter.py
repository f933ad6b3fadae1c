"""Segmenting and naming in one run: :class:`NamingSegmenter`.

It is the :class:`~vidseg_core.pipeline.VideoSegmenter` with two additions:

* around each batch's feature pass, the naming layers' queries are kept (:mod:`.capture`) and turned
  into per-pixel word scores at once (:mod:`.cross_attention`): nothing of a batch outlives it;
* each batch's refined coarse labels add those scores into :class:`~.namer.NameScores`; at the end the
  label table takes the names (:func:`~.namer.apply_names`) and :attr:`naming` describes them.

The vocabulary is read once, before the first batch, by the namer's own text tower.  The namer is the
backbone itself for SD 2.1; SVD has no text encoder, so naming on SVD needs an SD 2.1 checkpoint as the
namer, run on the same frames (its own pass to the feature step: the cost of an SD feature pass).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import InputError
from ..features import evaluate_feature_step, prepare_batch
from ..pipeline import VideoSegmenter
from .capture import NamingCapture, naming_layers
from .cross_attention import vocabulary_keys, word_probabilities
from .namer import NameScores, apply_names, check_threshold, default_threshold
from .text import vocabulary_embeddings
from .vocabulary import load_vocabulary


@dataclass
class NamingSettings:
    #: words: a :class:`~.vocabulary.Vocabulary`, a shipped list's name, a file, or "sky, water, ..."
    vocabulary: object
    #: mean word score a label's best word needs (None: twice the chance level 1/W)
    threshold: Optional[float] = None
    #: a CLIP tokenizer folder (None: the namer's own)
    tokenizer: Optional[str] = None
    #: the SD 2.1 backbone naming the regions (None: the segmenting backbone, which must be SD 2.1)
    namer: object = None
    #: ``phrases -> [P, C]`` embeddings from the host's own copy of the checkpoint's text encoder (ComfyUI's
    #: CLIP, :data:`~.text.PhraseEncoder`); None: the namer's text tower and tokenizer
    encoder: object = None


def resolve_namer(backbone, namer=None):
    """The SD 2.1 backbone that names ``backbone``'s regions, or a clear refusal."""
    chosen = namer if namer is not None else backbone
    if getattr(chosen, "family", None) != "sd":
        if namer is None:
            raise InputError(f"Naming regions needs a text encoder, and {backbone.name} (Stable Video Diffusion) "
                             "has none.", "Give an SD 2.1 checkpoint as the namer (--namer MODEL), which reads the "
                             "words and the same frames, or segment without a vocabulary.")
        raise InputError(f"The namer {chosen.name} is not Stable Diffusion 2.1.", "Give an SD 2.1 checkpoint.")
    return chosen


class NamingSegmenter(VideoSegmenter):
    """See the module docstring; ``naming`` is a :class:`NamingSettings`."""

    def __init__(self, backbone, settings=None, progress=None, cancel=None, naming: NamingSettings = None):
        super().__init__(backbone, settings, progress, cancel)
        if naming is None:
            raise InputError("No naming settings were given.", "Pass NamingSettings(vocabulary=...).")
        self.vocabulary = load_vocabulary(naming.vocabulary)
        self.threshold = check_threshold(naming.threshold)
        self.namer = resolve_namer(backbone, naming.namer)
        self.tokenizer = naming.tokenizer
        self.encoder = naming.encoder
        self.scores = NameScores(self.vocabulary)
        self.layers = naming_layers(self.namer.config)
        self._keys = None
        self._pending: Optional[torch.Tensor] = None
        self.naming_seconds = {"text": 0.0, "maps": 0.0, "namer_pass": 0.0}
        #: after :meth:`run`: what naming found (see :meth:`report`)
        self.naming: Optional[dict] = None

    # ------------------------------------------------------------ per batch
    def _vocabulary_keys(self):
        if self._keys is None:
            t = time.perf_counter()
            emb = vocabulary_embeddings(self.namer, self.vocabulary, self.tokenizer, self.encoder)
            self._keys = vocabulary_keys(self.namer, self.layers, emb)
            self.naming_seconds["text"] += time.perf_counter() - t
        return self._keys

    def _capture(self, stop: bool) -> NamingCapture:
        nb = self.namer
        return NamingCapture(self.layers, nb.config.feature_step, nb.dtype, nb.device, stop_when_done=stop)

    def _features(self, frames, with_reference: bool = False):
        keys = self._vocabulary_keys()
        if self.namer is self.backbone:
            capture = self._capture(stop=False)
            with self.backbone.hooks(capture):
                out = super()._features(frames, with_reference)
            latent_hw = out[0].latent_hw
        else:
            out = super()._features(frames, with_reference)
            t = time.perf_counter()
            capture, latent_hw = self._namer_pass(frames)
            self.naming_seconds["namer_pass"] += time.perf_counter() - t
        t = time.perf_counter()
        grid = tuple(out[1].shape[1:3])
        self._pending = word_probabilities(capture.queries(), keys, latent_hw, grid)
        self.naming_seconds["maps"] += time.perf_counter() - t
        return out

    @torch.inference_mode()
    def _namer_pass(self, frames):
        """The SD 2.1 namer's own pass on the frames, to its feature step, ended after the last naming layer."""
        nb = self.namer
        inputs = prepare_batch(nb, frames, self.settings.seed)
        cfg = nb.config
        x = inputs.x_start[None]
        if cfg.feature_step > cfg.modulation_step:
            x = nb.denoise(x, inputs.cond, cfg.modulation_step, end_step=cfg.feature_step - 1)
        capture = self._capture(stop=True)
        evaluate_feature_step(nb, x, inputs.cond, capture)
        return capture, inputs.latent_hw

    # ------------------------------------------------------------ run
    def run(self, read, num_frames, frame_size, skip_upsample=None):
        for res in super().run(read, num_frames, frame_size, skip_upsample):
            scores = self._pending[res.batch.write_offset:]
            if scores.shape[0] != res.coarse.shape[0]:
                raise RuntimeError(f"naming lost track of the batches: {scores.shape[0]} frames of word scores "
                                   f"for the {res.coarse.shape[0]} new frames of batch {res.batch.index}")
            coarse = res.coarse.to(scores.device)
            if tuple(scores.shape[1:3]) != tuple(coarse.shape[1:]):  # a namer on another grid
                scores = torch.nn.functional.interpolate(scores.permute(0, 3, 1, 2), size=tuple(coarse.shape[1:]),
                                                         mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
            self.scores.add(scores, coarse)
            yield res
        self._pending = None
        names = self.scores.names(self.threshold)
        table = self.summary.table
        self.summary.table = apply_names(table, names)
        self.naming = self.report(names, table.kind != "cluster")

    def report(self, names, named_by_reference: bool) -> dict:
        thr = default_threshold(len(self.vocabulary)) if self.threshold is None else self.threshold
        return {"vocabulary": self.vocabulary.to_dict(), "threshold": thr, "namer": self.namer.name,
                "layers": [str(l) for l in self.layers],
                "applied": not named_by_reference,
                "note": ("a reference mask names the labels: the words are reported, not applied"
                         if named_by_reference else ""),
                "labels": [n.to_dict() for n in names.values()],
                # spent inside the feature stage (summary seconds["features"] includes them)
                "seconds": {k: round(v, 3) for k, v in self.naming_seconds.items()}}
