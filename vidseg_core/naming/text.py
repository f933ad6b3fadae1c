"""Encoding a vocabulary with the checkpoint's own text tower.

Each phrase is read on its own, as open-vocabulary attention maps do (OVAM: one attribution prompt per
word, encoded separately, no UNet pass): token ids ``[start] + phrase + [end]`` padded with 0 to 77
(OpenCLIP's layout, the one SD 2.1 was trained with; the tower is causal, so the padding after a phrase
changes none of its tokens and is not computed), through the tower the backbone's conditioning uses
(OpenCLIP-H minus its last block, with the final layer norm).  A phrase's embedding is the mean of its
own tokens' hidden states (start, end and padding excluded); an entry's is the mean of its phrases'.
The UNet's ``to_k`` is linear, so these means are the means of the keys (:mod:`.cross_attention`).

Token ids come from the checkpoint's tokenizer folder (``vocab.json`` + ``merges.txt``, read with
``transformers``' ``CLIPTokenizer``): a diffusers folder's ``tokenizer/``, or one given by the user
(single ``.safetensors`` files hold no tokenizer).  The tiny test model has its own word map.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import torch

from ..errors import InputError
from .vocabulary import MAX_PHRASE_TOKENS, Vocabulary

START_ID, END_ID, PAD_ID, CONTEXT = 49406, 49407, 0, 77
TOKENIZER_FILES = ("vocab.json", "merges.txt")

#: phrase -> token ids (no start / end)
WordIds = Callable[[str], List[int]]


def tokenizer_from_folder(folder) -> WordIds:
    """``phrase -> ids`` of a CLIP BPE tokenizer folder (``vocab.json`` + ``merges.txt``)."""
    folder = Path(folder).expanduser()
    missing = [f for f in TOKENIZER_FILES if not (folder / f).is_file()]
    if missing:
        raise InputError(f"{folder} is not a CLIP tokenizer folder: {', '.join(missing)} missing.",
                         "Give the tokenizer/ folder of an SD 2.1 diffusers model (vocab.json and merges.txt).")
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))

    def ids(phrase: str) -> List[int]:
        return list(tok(phrase, add_special_tokens=False)["input_ids"])

    return ids


def word_ids_for(backbone, tokenizer: Optional[str] = None) -> WordIds:
    """The tokenizer for ``backbone``: ``tokenizer`` (a folder) if given, else the backbone's own."""
    if tokenizer:
        return tokenizer_from_folder(tokenizer)
    own = getattr(backbone, "word_ids", None)
    if own is not None:
        return own
    folder = getattr(backbone, "tokenizer_dir", None)
    if folder is not None:
        return tokenizer_from_folder(folder)
    raise InputError(f"{backbone.name} ships no tokenizer, which naming needs to read the vocabulary's words.",
                     "Give the tokenizer/ folder of the SD 2.1 diffusers model (vocab.json + merges.txt; "
                     "--tokenizer DIR), or load the model as a diffusers folder.")


def phrase_token_ids(word_ids: WordIds, phrase: str) -> List[int]:
    ids = [int(i) for i in word_ids(phrase)]
    if not ids:
        raise InputError(f"The phrase {phrase!r} has no tokens.", "Use a word the tokenizer can read.")
    return ids[:MAX_PHRASE_TOKENS]


#: phrases -> their embeddings ``[P, C]`` (each the mean of the phrase's own token states): how a host
#: with its own text encoder (ComfyUI's CLIP) reads the vocabulary
PhraseEncoder = Callable[[List[str]], torch.Tensor]


def entry_means(vocabulary: Vocabulary, per_phrase: torch.Tensor) -> torch.Tensor:
    """``[W, C]``: each entry's mean over its phrases' rows of ``per_phrase`` (phrases in vocabulary order)."""
    owner = [i for i, e in enumerate(vocabulary.entries) for _ in e.phrases]
    if per_phrase.shape[0] != len(owner):
        raise ValueError(f"{per_phrase.shape[0]} phrase embeddings for {len(owner)} phrases")
    index = torch.tensor(owner)
    out = torch.zeros(len(vocabulary), per_phrase.shape[-1]).index_add_(0, index, per_phrase.float().cpu())
    return out / torch.bincount(index, minlength=len(vocabulary)).float()[:, None]


@torch.inference_mode()
def encode_vocabulary(text_encoder, word_ids: WordIds, vocabulary: Vocabulary, chunk: int = 32) -> torch.Tensor:
    """Entry embeddings ``[W, C]`` float32 on the CPU (see the module docstring)."""
    phrases = [phrase_token_ids(word_ids, p) for e in vocabulary.entries for p in e.phrases]
    param = next(text_encoder.parameters())
    rows = []
    for a in range(0, len(phrases), chunk):
        part = phrases[a:a + chunk]
        # the tower is causal: a token's state depends on the tokens before it alone, so the padding to 77
        # is left out (same states, a fraction of the work)
        ids = torch.full((len(part), 2 + max(len(t) for t in part)), PAD_ID, dtype=torch.long)
        for j, toks in enumerate(part):
            ids[j, 0], ids[j, 1:1 + len(toks)], ids[j, 1 + len(toks)] = START_ID, torch.tensor(toks), END_ID
        hidden = text_encoder(input_ids=ids.to(param.device)).last_hidden_state.float().cpu()
        for j, toks in enumerate(part):
            rows.append(hidden[j, 1:1 + len(toks)].mean(0))
    return entry_means(vocabulary, torch.stack(rows))


def vocabulary_embeddings(backbone, vocabulary: Vocabulary, tokenizer: Optional[str] = None,
                          encoder: Optional[PhraseEncoder] = None) -> torch.Tensor:
    """``[W, C]``: the vocabulary read by ``encoder`` when given, else by ``backbone``'s own text tower (loaded
    for this, then dropped)."""
    if encoder is not None:
        phrases = [p for e in vocabulary.entries for p in e.phrases]
        out = torch.as_tensor(encoder(phrases))
        if out.ndim != 2 or out.shape[0] != len(phrases):
            raise InputError(f"The text encoder gave {tuple(out.shape)} for {len(phrases)} phrases.",
                             "Return one embedding row per phrase.")
        return entry_means(vocabulary, out)
    if getattr(backbone, "family", None) != "sd":
        raise InputError(f"{backbone.name} has no text encoder to read words with.",
                         "Name the regions with an SD 2.1 checkpoint (the namer).")
    word_ids = word_ids_for(backbone, tokenizer)
    loader = getattr(backbone, "text_encoder_loader", None)
    if loader is None:
        raise InputError(f"{backbone.name} was loaded without access to its text encoder.",
                         "Load the SD 2.1 checkpoint with vidseg_core.backbones.load_backbone.")
    te = loader()
    if backbone.device.type != "cpu":  # on a GPU in the backbone's dtype: 0.7 GB for SD 2.1's tower in fp16
        te = te.to(backbone.device, backbone.dtype)
    try:
        return encode_vocabulary(te, word_ids, vocabulary)
    finally:
        del te
