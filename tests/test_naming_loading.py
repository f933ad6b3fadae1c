"""The text tower and tokenizer naming reads, from each way SD 2.1 is loaded (tiny files, offline)."""
import json

import pytest
import torch

from tests.helpers.ldm_layout import write_sd_checkpoint
from vidseg_core.backbones import load_backbone
from vidseg_core.backbones.sd21 import build_tiny_sd_parts, empty_prompt_embedding, tiny_word_ids
from vidseg_core.errors import InputError
from vidseg_core.naming.text import tokenizer_from_folder, word_ids_for


@pytest.fixture(scope="module")
def parts():
    return build_tiny_sd_parts(0)


def _write_tokenizer(folder):
    """A two-word CLIP BPE tokenizer: 'sky' and 'sea' (vocab.json + merges.txt)."""
    folder.mkdir(parents=True)
    vocab = {"<|startoftext|>": 49406, "<|endoftext|>": 49407, "s": 1, "k": 2, "e": 3, "y</w>": 4, "a</w>": 5,
             "sk": 6, "se": 7, "sky</w>": 8, "sea</w>": 9}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\ns k\ns e\nsk y</w>\nse a</w>\n")
    return folder


def test_single_file_gives_back_its_text_tower(parts, tmp_path):
    path = write_sd_checkpoint(tmp_path / "tiny-sd21.safetensors", *parts)
    bb = load_backbone(str(path), device="cpu", precision="fp32")
    te = bb.text_encoder_loader()
    assert torch.allclose(empty_prompt_embedding(te), empty_prompt_embedding(parts[2]), atol=1e-6)
    with pytest.raises(InputError, match="ships no tokenizer"):  # a single file holds no tokenizer
        word_ids_for(bb)
    tok = _write_tokenizer(tmp_path / "tok")
    assert word_ids_for(bb, str(tok))("sky sea") == [8, 9]


def test_diffusers_folder_gives_back_its_text_tower_and_tokenizer(parts, tmp_path):
    unet, vae, te = parts
    d = tmp_path / "tiny-sd21-diffusers"
    unet.save_pretrained(d / "unet")
    vae.save_pretrained(d / "vae")
    te.save_pretrained(d / "text_encoder")
    _write_tokenizer(d / "tokenizer")
    (d / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    bb = load_backbone(str(d), device="cpu", precision="fp32")
    assert torch.allclose(empty_prompt_embedding(bb.text_encoder_loader()), empty_prompt_embedding(te), atol=1e-6)
    assert bb.tokenizer_dir == d / "tokenizer" and word_ids_for(bb)("sea") == [9]


def test_tokenizer_folder_errors_and_tiny_ids(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "vocab.json").write_text("{}")
    with pytest.raises(InputError, match="merges.txt missing"):
        tokenizer_from_folder(tmp_path / "t")
    assert tiny_word_ids("Blue  sky") == tiny_word_ids("blue sky") and len(tiny_word_ids("blue sky")) == 2
    assert all(0 < i < 49406 for i in tiny_word_ids("a b c d"))
