"""Naming the regions with words: SD 2.1's own text encoder and decoder cross-attention.

* :mod:`.vocabulary` — the words (user lists, files, the shipped VSPW / ADE20K / everyday lists);
* :mod:`.text` — tokenising and encoding them with the checkpoint's own text tower;
* :mod:`.capture` — the cross-attention queries kept from the feature pass (no extra UNet pass);
* :mod:`.cross_attention` — each word's attention maps, normalised per pixel across the vocabulary;
* :mod:`.namer` — the per-label scores over the video and the names they give;
* :mod:`.segmenter` — the segmenter that names while it segments.
"""
from .vocabulary import Vocabulary, load_vocabulary

__all__ = ["Vocabulary", "load_vocabulary"]
