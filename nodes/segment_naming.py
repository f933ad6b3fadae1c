"""Segment Video's naming inputs: a vocabulary read by the checkpoint's CLIP, an SD 2.1 namer for SVD.

With a vocabulary Segment Video runs :class:`~vidseg_core.naming.segmenter.NamingSegmenter` (see
docs/naming.md).  The words are read

* by ComfyUI's CLIP when ``clip`` is connected (:func:`clip_phrase_encoder`: the library's ``encoder``
  hook), else
* by the namer's own text tower and tokenizer (a diffusers folder or the tiny test model ship them).

Nothing here imports ComfyUI: the CLIP object is used through ``tokenize`` / ``encode_from_tokens`` alone.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

import torch

from ..vidseg_core.errors import InputError
from .comfy_adapters import bridge
from ..vidseg_core.naming.capture import naming_layers
from ..vidseg_core.naming.cross_attention import layer_module
from ..vidseg_core.naming.segmenter import NamingSettings, resolve_namer
from ..vidseg_core.naming.text import END_ID, START_ID, PhraseEncoder
from ..vidseg_core.naming.vocabulary import BUILTIN, MAX_PHRASE_TOKENS, load_vocabulary, vocabulary_from_items

VOCABULARY_TOOLTIP = (
    "Words that name the regions, comma or newline separated ('sky, water, person'; 'name: phrase | phrase' for "
    "synonyms), or a shipped list: " + ", ".join(BUILTIN) + ". Read by SD 2.1's text encoder and placed by its "
    "cross-attention in the feature pass. Empty = numbered clusters. A reference mask's names are kept.")
NAME_THRESHOLD_TOOLTIP = ("Mean word score a label's best word needs to name it (0..1); -1 = the default, twice "
                          "the chance level 1/W for W words.")
CLIP_TOOLTIP = ("Naming: the CLIP of the SD 2.1 checkpoint (Load Checkpoint) that reads the vocabulary. Needed "
                "unless the model ships its own tokenizer (a diffusers folder).")
NAMER_TOOLTIP = ("Naming on SVD (which has no text encoder): an SD 2.1 model from VidSeg Model from ComfyUI "
                 "(recommended) or Load SD/SVD; it reads the words and runs its own pass on the same frames.")


def node_vocabulary(text: str):
    """The vocabulary typed in the node: a shipped list's name or words; never a file on the server."""
    text = str(text or "").strip()
    if text.lower() in BUILTIN:
        return load_vocabulary(text)
    return vocabulary_from_items(text.replace("\n", ",").replace(";", ",").split(","), "node")


def phrase_length(tokens, phrase: str) -> int:
    """How many of the phrase's own tokens ``clip.tokenize(phrase)`` holds: the ids between the start id and the
    first end id (at most the library's phrase limit)."""
    if not isinstance(tokens, dict) or len(tokens) != 1:
        keys = sorted(tokens) if isinstance(tokens, dict) else type(tokens).__name__
        raise InputError(f"The connected CLIP is not SD 2.1's (its tokens are {keys}, not one OpenCLIP-H stream).",
                         "Connect the CLIP output of Load Checkpoint for the SD 2.1 checkpoint.")
    (chunks,) = tokens.values()
    ids = []
    for t in chunks[0]:
        i = t[0] if isinstance(t, (tuple, list)) else t
        ids.append(int(i) if isinstance(i, int) or (torch.is_tensor(i) and i.numel() == 1) else -1)
    if not ids or ids[0] != START_ID or END_ID not in ids:
        raise InputError(f"The CLIP's tokens for {phrase!r} do not start with the start id and end with the end id.",
                         "Connect the CLIP output of Load Checkpoint for the SD 2.1 checkpoint.")
    n = ids.index(END_ID) - 1
    if n < 1:
        raise InputError(f"The phrase {phrase!r} has no tokens.", "Use a word the tokenizer can read.")
    return min(n, MAX_PHRASE_TOKENS)


def clip_phrase_encoder(clip) -> PhraseEncoder:
    """``phrases -> [P, C]`` with ComfyUI's CLIP: each phrase tokenised and encoded on its own (SD 2.x: the
    penultimate layer with the final layer norm), the mean of its own token rows 1..n."""
    def encode(phrases: List[str]) -> torch.Tensor:
        rows = []
        for p in phrases:
            tokens = clip.tokenize(p)
            n = phrase_length(tokens, p)
            cond = clip.encode_from_tokens(tokens)
            cond = cond[0] if isinstance(cond, (tuple, list)) else cond
            rows.append(cond[0, 1:1 + n].float().cpu().mean(0))
        return torch.stack(rows)

    return encode


def _reads_words_itself(backbone) -> bool:
    """Whether an SD 2.1 backbone has its own text tower and tokenizer (no CLIP needed)."""
    has_ids = getattr(backbone, "word_ids", None) is not None or getattr(backbone, "tokenizer_dir", None) is not None
    return getattr(backbone, "text_encoder_loader", None) is not None and has_ids


def _checked_width(encoder: PhraseEncoder, namer) -> PhraseEncoder:
    """The encoder, refusing a CLIP whose width is not the namer's cross-attention width."""
    def encode(phrases: List[str]) -> torch.Tensor:
        out = encoder(phrases)
        layer = naming_layers(namer.config)[0]
        width = getattr(layer_module(namer, layer).to_k, "in_features", None)
        if width is not None and out.shape[-1] != int(width):
            raise InputError(f"The connected CLIP gives {out.shape[-1]}-wide embeddings; {namer.name} reads "
                             f"{int(width)}-wide ones.", "Connect the CLIP of the same SD 2.1 checkpoint.")
        return out

    return encode


def naming_settings(model, vocabulary: str, name_threshold: float = -1.0, clip=None,
                    namer=None) -> Optional[NamingSettings]:
    """Segment Video's :class:`NamingSettings` for the model handle (and the SD 2.1 ``namer`` handle), or None
    when the vocabulary is empty (no naming: the inputs are not looked at)."""
    if not str(vocabulary or "").strip():
        return None
    backbone = model.backbone
    if namer is not None and not hasattr(namer, "backbone"):
        raise InputError(f"The 'namer' input is {type(namer).__name__}, not a VIDSEG_MODEL.",
                         "Connect an SD 2.1 model from Load SD/SVD or VidSeg Model from ComfyUI.")
    namer_backbone = None if namer is None else namer.backbone
    voc = node_vocabulary(vocabulary)
    thr = None if name_threshold is None or float(name_threshold) < 0 else float(name_threshold)
    if getattr(backbone, "family", None) != "sd" and namer_backbone is None:
        raise InputError(f"Naming regions needs a text encoder, and {backbone.name} (Stable Video Diffusion) has "
                         "none.", "Connect an SD 2.1 VIDSEG_MODEL (VidSeg Model from ComfyUI or Load SD/SVD) to "
                         "'namer' and its checkpoint's CLIP to 'clip', or clear the vocabulary.")
    namer = resolve_namer(backbone, namer_backbone)
    if clip is not None and not (hasattr(clip, "tokenize") and hasattr(clip, "encode_from_tokens")):
        raise InputError(f"The 'clip' input is {type(clip).__name__}, not a ComfyUI CLIP.",
                         "Connect the CLIP output of Load Checkpoint for the SD 2.1 checkpoint.")
    if clip is None and not _reads_words_itself(namer):
        raise InputError(f"{namer.name} has no tokenizer or text encoder of its own to read the vocabulary.",
                         "Connect the CLIP output of Load Checkpoint (the same SD 2.1 checkpoint) to 'clip'.")
    encoder = None if clip is None else _checked_width(clip_phrase_encoder(clip), namer)
    return NamingSettings(voc, thr, namer=namer_backbone, encoder=encoder)


def describe_naming(report: Optional[dict]) -> List[str]:
    """The info lines of a naming report: each label's word and score."""
    if not report:
        return []
    words = ", ".join(f"{n['value']}: {n['word']} {n['score']:.3f}" + ("" if n["named"] else " (below threshold)")
                      for n in report["labels"])
    head = (f"names ({report['vocabulary']['size']} words, threshold {report['threshold']:.3f}, "
            f"namer {report['namer']}): ")
    lines = [head + (words or "(no labels)")]
    if report.get("note"):
        lines.append(f"names not applied: {report['note']}")
    return lines


@contextlib.contextmanager
def namer_on_device(namer, keep_model_loaded: bool) -> Iterator[None]:
    """The namer's backbone on its compute device for the run (nothing without a namer)."""
    if namer is None:
        yield
        return
    with bridge.model_on_device(namer, keep_model_loaded):
        yield


def write_mask_video(writer, store, chosen: List[int], chunk: int) -> None:
    """The mask video of ``chosen`` from the stored labels (when the selection names words, known at the end)."""
    ids = torch.tensor(chosen, dtype=torch.long)
    for _, part in store.chunks(chunk):
        writer.write(torch.isin(part.long(), ids).to(torch.uint8) * 255)
