"""Naming the regions: vocabularies, text encoding, per-pixel normalisation, per-label scores, selection."""
import math

import pytest
import torch

from vidseg_core.backbones.attention import LayerId
from vidseg_core.errors import InputError
from vidseg_core.labels import LabelTable
from vidseg_core.naming.cross_attention import LayerKeys, word_probabilities
from vidseg_core.naming.namer import NameScores, apply_names, check_threshold, default_threshold
from vidseg_core.naming.selection import select_values, selection_mask
from vidseg_core.naming.text import encode_vocabulary
from vidseg_core.naming.vocabulary import BUILTIN, load_vocabulary, phrases_of


# ------------------------------------------------------------------ vocabularies
@pytest.mark.parametrize("name,size", [("vspw", 124), ("ade20k", 150), ("everyday", 40)])
def test_shipped_lists_have_their_sizes_and_no_duplicates(name, size):
    voc = load_vocabulary(name)
    assert len(voc) == size == BUILTIN[name]
    assert len({n.lower() for n in voc.names}) == size


def test_vspw_list_is_in_id_order():
    names = load_vocabulary("vspw").names
    assert names[0] == "wall" and names[28] == "sky" and names[60] == "person" and names[123] == "train"
    assert load_vocabulary("ade20k").names[:3] == ["wall", "building", "sky"]


def test_phrases_split_or_and_underscores():
    assert phrases_of("handrail_or_fence") == ("handrail", "fence")
    assert phrases_of("Microwave_oven") == ("microwave oven",)


def test_user_words_files_and_errors(tmp_path):
    assert load_vocabulary("sky,  water ;person").names == ["sky", "water", "person"]
    f = tmp_path / "words.txt"
    f.write_text("# mine\nsky\nboat: boat | ship  # two phrases\n\n")
    voc = load_vocabulary(str(f))
    assert voc.names == ["sky", "boat"] and voc.entries[1].phrases == ("boat", "ship")
    with pytest.raises(InputError, match="twice"):
        load_vocabulary("sky, Sky")
    with pytest.raises(InputError, match="empty"):
        load_vocabulary(" , ,")
    with pytest.raises(InputError, match="does not exist"):
        load_vocabulary(str(tmp_path / "missing.txt"))


# ------------------------------------------------------------------ text encoding
def test_encode_vocabulary_means_the_phrase_tokens_without_start_end_or_padding():
    from vidseg_core.backbones.sd21 import build_tiny_sd_parts

    _, _, te = build_tiny_sd_parts(0)
    table = {"sky": [11], "blue sky": [12, 11], "sea": [13]}
    voc = load_vocabulary(["sky", "water: sea | blue sky"])
    emb = encode_vocabulary(te, table.__getitem__, voc)

    def states(toks):  # full 77-token prompt, as the text tower is fed for the conditioning
        ids = torch.tensor([[49406] + toks + [49407] + [0] * (75 - len(toks))])
        return te(input_ids=ids).last_hidden_state[0, 1:1 + len(toks)].detach()

    assert torch.allclose(emb[0], states([11]).mean(0), atol=1e-5)
    water = (states([13]).mean(0) + states([12, 11]).mean(0)) / 2
    assert torch.allclose(emb[1], water, atol=1e-5)


def test_a_host_encoder_reads_the_phrases_and_entries_average_them():
    from vidseg_core.naming.text import vocabulary_embeddings

    seen = []

    def encoder(phrases):
        seen.extend(phrases)
        return torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])

    emb = vocabulary_embeddings(None, load_vocabulary(["sky", "water: sea | lake"]), encoder=encoder)
    assert seen == ["sky", "sea", "lake"]
    assert emb.tolist() == [[1.0, 0.0], [2.0, 3.0]]
    with pytest.raises(InputError, match="one embedding row per phrase"):
        vocabulary_embeddings(None, load_vocabulary("sky, sea"), encoder=lambda p: torch.zeros(1, 2))


# ------------------------------------------------------------------ per-pixel normalisation
def test_word_probabilities_match_hand_computed_softmax_over_words():
    # one layer at the feature grid (block 6: latent / 2), 2 heads of width 1, 2 tokens (grid 1x2), 2 words
    layer = LayerId(6, "spatial_cross")
    q = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # [T=1, tokens=2, C=2]
    k = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # word 0 key, word 1 key; heads = channels
    scale = 0.5
    p = word_probabilities({layer: q}, {layer: LayerKeys(k, heads=2, scale=scale)}, latent_hw=(2, 4), grid=(1, 2))
    assert p.shape == (1, 1, 2, 2)

    def sm(a, b):
        return math.exp(a) / (math.exp(a) + math.exp(b))

    # token 0: head 0 logits (1*2, 0)*0.5 -> (1, 0); head 1 logits (0, 0)
    w0_t0 = (sm(1.0, 0.0) + 0.5) / 2
    # token 1: head 0 (0, 0); head 1 logits (0, 2*1)*0.5 -> (0, 1)
    w0_t1 = (0.5 + sm(0.0, 1.0)) / 2
    assert torch.allclose(p[0, 0, :, 0], torch.tensor([w0_t0, w0_t1]), atol=1e-6)
    assert torch.allclose(p.sum(-1), torch.ones(1, 1, 2))  # each pixel sums to one across the words


def test_word_probabilities_bring_coarser_layers_to_the_grid_and_average_layers():
    fine, coarse = LayerId(6, "spatial_cross"), LayerId(3, "spatial_cross")  # grids 2x2 and 1x1 for latent 4x4
    k = torch.tensor([[1.0], [-1.0]])
    q_fine = torch.zeros(1, 4, 1)  # equal logits: 0.5 / 0.5
    q_coarse = torch.full((1, 1, 1), math.log(3.0))  # logits (log 3, -log 3): p0 = 9 / 10
    keys = {fine: LayerKeys(k, 1, 1.0), coarse: LayerKeys(k, 1, 1.0)}
    p = word_probabilities({fine: q_fine, coarse: q_coarse}, keys, latent_hw=(4, 4), grid=(2, 2))
    assert torch.allclose(p[..., 0], torch.full((1, 2, 2), (0.5 + 0.9) / 2), atol=1e-6)


# ------------------------------------------------------------------ per-label scores
def test_name_scores_average_inside_each_label_over_the_video_and_threshold():
    voc = load_vocabulary("sky, water, person")
    acc = NameScores(voc)
    s1 = torch.tensor([[[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]]])  # [T=1, h=1, w=2, W=3]
    s2 = torch.tensor([[[[0.5, 0.4, 0.1], [0.4, 0.3, 0.3]]]])
    acc.add(s1, torch.tensor([[[4, 9]]]))
    acc.add(s2, torch.tensor([[[4, 4]]]))  # label 4: three cells over two batches
    means = acc.mean_scores()
    assert torch.allclose(means[4], torch.tensor([1.6, 0.9, 0.5]) / 3)
    names = acc.names(threshold=0.5)
    assert names[4].word == "sky" and names[4].named and names[4].cells == 3
    assert names[4].runner_up == "water"
    assert names[9].word == "person" and names[9].named
    assert acc.names(threshold=0.6)[4].named is False  # 0.533 < 0.6: stays unnamed
    assert default_threshold(3) == pytest.approx(2 / 3) and default_threshold(150) == pytest.approx(2 / 150)
    assert default_threshold(2) == pytest.approx(0.75)  # twice chance would be certainty


def test_apply_names_renames_clusters_only_never_a_reference():
    voc = load_vocabulary("sky, water")
    acc = NameScores(voc)
    acc.add(torch.tensor([[[[0.9, 0.1], [0.45, 0.55]]]]), torch.tensor([[[0, 1]]]))
    names = acc.names(threshold=0.6)
    clusters = LabelTable.from_values([0, 1], kind="cluster")
    named = apply_names(clusters, names)
    assert [e.name for e in named] == ["sky", "cluster 1"]  # 0.55 < 0.6: unnamed
    assert named.entries[0].score == pytest.approx(0.9)
    assert LabelTable.from_dict(named.to_dict()).entries[0].score == pytest.approx(0.9)
    reference = LabelTable.from_values([0, 1], names={0: "swan", 1: "lake"})
    assert [e.name for e in apply_names(reference, names)] == ["swan", "lake"]


def test_naming_needs_two_words_and_a_threshold_in_range():
    with pytest.raises(InputError, match="at least two"):
        NameScores(load_vocabulary(["sky"]))
    with pytest.raises(InputError, match="outside"):
        check_threshold(1.5)


# ------------------------------------------------------------------ selection
def test_select_by_name_takes_every_label_of_that_name():
    table = LabelTable.from_values([0, 1, 2], names={0: "sky", 1: "water", 2: "Sky"}, kind="cluster")
    assert select_values("sky", table) == [0, 2]
    assert select_values("water, 0", table) == [1, 0]
    with pytest.raises(InputError, match="No label is called 'tree'"):
        select_values("tree", table)
    m = selection_mask(torch.tensor([[0, 1], [2, 1]]), [0, 2])
    assert m.tolist() == [[255, 0], [255, 0]]
