"""Naming in the nodes: Segment Video's vocabulary, clip and namer inputs, Select Labels by a shared name,
All Labels' scores, and the Colorize legend, through the node code with the stand-ins.

The tiny SD 2.1 twin gets weights under which 'sky' takes one cluster and 'water' the other
(:mod:`tests.helpers.naming_construct`), so the names the node gives are known in advance.
"""
from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.comfy_executor_standin import run_node as comfy_run
from tests.helpers.comfy_standin import CLIP, standin_sd
from tests.helpers.naming_construct import construct
from tools.pack_loader import load_pack, pack_nodes

PACK = load_pack()
NODES = pack_nodes(PACK)
CORE = "vidseg_pack.vidseg_core"


def _pack(name):
    return importlib.import_module(f"vidseg_pack.{name}")


errors = _pack("vidseg_core.errors")
labels_mod = _pack("vidseg_core.labels")
sockets = _pack("nodes.sockets")
sd21 = _pack("vidseg_core.backbones.sd21")
segmenter = _pack("vidseg_core.naming.segmenter")
text = _pack("vidseg_core.naming.text")
vocab = _pack("vidseg_core.naming.vocabulary")
pipeline = _pack("vidseg_core.pipeline")
node_naming = _pack("nodes.segment_naming")
legend_mod = _pack("vidseg_core.legend")

T, H, W = 2, 64, 128
RUN = dict(num_clusters=2, mode="fast", batch_size=T, seed=1)


def run_node(node_id, **inputs):
    with torch.inference_mode():
        return comfy_run(NODES[node_id], **inputs)[0]


def _frames():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (T, H, W, 3)).astype(np.float32) / 255
    img[:, :, : W // 2] *= 0.25  # left half dark, right half bright
    return torch.from_numpy(img)


FRAMES = _frames()


def _handle(bb):
    return sockets.ModelHandle(bb, bb.name, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def constructed():
    bb = sd21.build_tiny_sd()
    coarse, (a, b) = construct(bb, FRAMES, vocab.load_vocabulary("sky, water"), core=CORE)
    return _handle(bb), coarse, a, b


def _library_table(bb, threshold, namer=None, encoder=None):
    seg = segmenter.NamingSegmenter(bb, pipeline.SegmentSettings(**RUN),
                                    naming=segmenter.NamingSettings("sky, water", threshold, namer=namer,
                                                                    encoder=encoder))
    list(seg.run(lambda x, y: FRAMES[x:y], T, (H, W)))
    return seg.summary.table


def _names_scores(table):
    return [(e.value, e.name, e.score) for e in table]


# ------------------------------------------------------------------ Segment Video with a vocabulary
def test_segment_video_names_the_labels_as_the_library_does(constructed):
    handle, coarse, a, b = constructed
    out = run_node("VidSegSegmentVideo", model=handle, frames=FRAMES, vocabulary="sky, water", name_threshold=0.6,
                   **RUN)
    table = out[0].table
    assert table.name_of(a) == "sky" and table.name_of(b) == "water"
    assert _names_scores(table) == _names_scores(_library_table(handle.backbone, 0.6))
    info = out[4]
    assert f"{a}: sky {table.entry(a).score:.3f}" in info and f"{b}: water {table.entry(b).score:.3f}" in info
    # the names reach the nodes that read the table
    masks, count, listing = run_node("VidSegAllLabelMasks", labels=out[0])
    assert f"{b}: water" in listing and f"score {table.entry(b).score:.3f}" in listing
    (m,) = run_node("VidSegSelectLabels", labels=out[0], select="water")
    assert torch.equal(m, (out[0].full_resolution() == b).float())


def test_mask_labels_may_name_words_known_only_at_the_end(constructed):
    handle, coarse, a, b = constructed
    out = run_node("VidSegSegmentVideo", model=handle, frames=FRAMES, vocabulary="sky, water", name_threshold=0.6,
                   mask_labels="water", **RUN)
    assert torch.equal(out[1], (out[0].full_resolution() == b).float())
    assert f"mask output = labels [{b}]" in out[4]
    with pytest.raises(errors.InputError, match=r"No label is called 'tree'.*water"):
        run_node("VidSegSegmentVideo", model=handle, frames=FRAMES, vocabulary="sky, water", name_threshold=0.6,
                 mask_labels="tree", **RUN)


def _without_seconds(info):
    return [line for line in info.splitlines() if not line.startswith("seconds")]


def test_empty_vocabulary_is_todays_run(constructed, monkeypatch):
    handle, coarse, a, b = constructed
    before = run_node("VidSegSegmentVideo", model=handle, frames=FRAMES, **RUN)
    run_mod = _pack("nodes.segment_run")
    monkeypatch.setattr(run_mod, "NamingSegmenter", None)  # an empty vocabulary must not reach it
    after = run_node("VidSegSegmentVideo", model=handle, frames=FRAMES, vocabulary="  \n", name_threshold=0.5,
                     clip="not looked at", namer="not looked at", **RUN)
    assert torch.equal(before[0].full_resolution(), after[0].full_resolution())
    assert _names_scores(after[0].table) == _names_scores(before[0].table)
    assert all(e.name == f"cluster {e.value}" and e.score is None for e in after[0].table)
    for k in (1, 2, 3):
        assert torch.equal(before[k], after[k])
    assert _without_seconds(after[4]) == _without_seconds(before[4]) and "names" not in after[4]


def test_reference_names_are_kept_through_the_node(constructed):
    handle, coarse, a, b = constructed
    up = F.interpolate(coarse[:1, None].float(), size=(H, W), mode="nearest")[0, 0]
    mask = (up == a).float()[None]
    out = run_node("VidSegSegmentVideo", model=handle, frames=FRAMES, reference_mask=mask, label_names="1: swan",
                   vocabulary="sky, water", name_threshold=0.6, **RUN)
    assert [e.name for e in out[0].table] == ["background", "swan"]
    assert "1: sky" in out[4] and "names not applied" in out[4]


# ------------------------------------------------------------------ ComfyUI's CLIP reads the words
def test_clip_adapter_equals_the_librarys_own_encoding():
    bb = sd21.build_tiny_sd()
    voc = vocab.load_vocabulary("sky, sea: water | sea, red car")
    own = text.vocabulary_embeddings(bb, voc)
    clip = CLIP(bb.text_encoder_loader())
    via_clip = text.vocabulary_embeddings(bb, voc, encoder=node_naming.clip_phrase_encoder(clip))
    assert own.shape == via_clip.shape == (3, own.shape[1])
    assert torch.allclose(via_clip, own, atol=1e-5)
    # the phrase's own rows 1..n: the start row (or the end row) would change the means
    _, clip_load, _ = standin_sd()
    assert torch.allclose(text.vocabulary_embeddings(bb, voc, encoder=node_naming.clip_phrase_encoder(clip_load)),
                          own, atol=1e-5)


def test_segment_video_with_a_clip_names_as_with_the_models_own_tower(constructed):
    handle, coarse, a, b = constructed
    bb = handle.backbone
    clip = CLIP(bb.text_encoder_loader())
    out = run_node("VidSegSegmentVideo", model=handle, frames=FRAMES, vocabulary="sky, water", name_threshold=0.6,
                   clip=clip, **RUN)
    own = _names_scores(_library_table(bb, 0.6))
    got = _names_scores(out[0].table)
    assert [g[:2] for g in got] == [o[:2] for o in own] == [(a, "sky"), (b, "water")]
    assert np.allclose([g[2] for g in got], [o[2] for o in own], atol=1e-5)


def test_vidseg_model_from_comfyui_names_with_its_clip_as_the_library_does():
    """The recommended path: Load Checkpoint's MODEL / CLIP / VAE (ComfyUI's UNet layout) through VidSeg Model
    from ComfyUI; the words' queries come through ComfyUI's attention patches, their keys from the UNet's
    own cross-attention modules (found by path) and the CLIP."""
    model, clip, vae = standin_sd(ldm=True)
    (handle,) = run_node("VidSegModelFromComfy", model=model, vae=vae, clip=clip)
    out = run_node("VidSegSegmentVideo", model=handle, frames=FRAMES, vocabulary="sky, water", name_threshold=0.0,
                   clip=clip, **RUN)
    own = _names_scores(_library_table(sd21.build_tiny_sd(), 0.0))  # the same weights, diffusers layout
    got = _names_scores(out[0].table)
    assert [g[:2] for g in got] == [o[:2] for o in own]
    assert np.allclose([g[2] for g in got], [o[2] for o in own], atol=1e-5)
    assert "namer comfy-sd21" in out[4]
    with pytest.raises(errors.InputError, match="Connect the CLIP output"):  # it has no tokenizer of its own
        run_node("VidSegSegmentVideo", model=handle, frames=FRAMES, vocabulary="sky", **RUN)


def test_clip_is_required_without_a_tokenizer_and_must_be_sd21s():
    bb = sd21.build_tiny_sd()
    bb.word_ids = None  # as a single-file checkpoint: no tokenizer of its own
    with pytest.raises(errors.InputError, match="Connect the CLIP output of Load Checkpoint"):
        run_node("VidSegSegmentVideo", model=_handle(bb), frames=FRAMES, vocabulary="sky", **RUN)
    with pytest.raises(errors.InputError, match="not a ComfyUI CLIP"):
        run_node("VidSegSegmentVideo", model=_handle(bb), frames=FRAMES, vocabulary="sky", clip=object(), **RUN)
    sdxl = {"g": [[(49406, 1.0), (1, 1.0), (49407, 1.0)]], "l": [[(49406, 1.0), (1, 1.0), (49407, 1.0)]]}
    with pytest.raises(errors.InputError, match="not SD 2.1's"):
        node_naming.phrase_length(sdxl, "sky")
    assert node_naming.phrase_length({"h": [[(49406, 1.0), (5, 1.0), (6, 1.0), (49407, 1.0), (0, 1.0)]]}, "a b") == 2


def test_node_vocabulary_reads_words_or_a_shipped_list_never_a_file(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text("tree\nhouse\n")
    assert node_naming.node_vocabulary(str(f)).names == [str(f)]
    assert len(node_naming.node_vocabulary("Everyday")) == vocab.BUILTIN["everyday"]
    assert node_naming.node_vocabulary("sky\nwater; person").names == ["sky", "water", "person"]


# ------------------------------------------------------------------ SVD: the namer
def test_svd_naming_needs_an_sd21_namer(monkeypatch):
    (svd,) = run_node("VidSegLoadModel", model="tiny-svd", precision="auto", device="cpu")
    with pytest.raises(errors.InputError, match=r"Stable Video Diffusion.*Connect an SD 2.1 VIDSEG_MODEL .*'namer'"):
        run_node("VidSegSegmentVideo", model=svd, frames=FRAMES, vocabulary="sky, water", **RUN)
    with pytest.raises(errors.InputError, match="not Stable Diffusion 2.1"):
        run_node("VidSegSegmentVideo", model=svd, frames=FRAMES, vocabulary="sky, water", namer=svd, **RUN)
    (sd,) = run_node("VidSegLoadModel", model="tiny-sd", precision="auto", device="cpu")
    bridge = _pack("nodes.comfy_adapters.bridge")
    moved, released = [], []
    monkeypatch.setattr(bridge, "move_model", lambda bb, device: moved.append(bb.name))
    monkeypatch.setattr(bridge, "release_model", lambda bb: released.append(bb.name))
    out = run_node("VidSegSegmentVideo", model=svd, frames=FRAMES, vocabulary="sky, water", name_threshold=0.0,
                   namer=sd, **RUN)
    assert moved == released[::-1] == [svd.backbone.name, sd.backbone.name]  # the namer too, offloaded after
    assert {e.name for e in out[0].table} <= {"sky", "water"}  # threshold 0: every label takes its best word
    assert _names_scores(out[0].table) == _names_scores(_library_table(svd.backbone, 0.0, namer=sd.backbone))
    assert "namer tiny-sd" in out[4]


# ------------------------------------------------------------------ selection, listing, legend
def _shared_name_labels():
    lab = torch.zeros(T, H, W, dtype=torch.long)
    lab[:, :, 40:80] = 1
    lab[:, :, 80:100] = 3
    lab[:, :, 100:] = 4
    colour = labels_mod.palette_color
    table = labels_mod.LabelTable([labels_mod.LabelEntry(0, 0, "cluster 0", colour(0)),
                                   labels_mod.LabelEntry(1, 1, "sky", colour(1), 0.75),
                                   labels_mod.LabelEntry(2, 3, "sky", colour(3), 0.5),
                                   labels_mod.LabelEntry(3, 4, "water", colour(4), 0.625)], "cluster")
    return sockets.Labels(lab, table, (H, W), False, {"batch_size": 14, "seed": 1})


def test_select_labels_by_a_shared_name_selects_every_label_so_named():
    lab = _shared_name_labels()
    (sky,) = run_node("VidSegSelectLabels", labels=lab, select="Sky")
    assert torch.equal(sky, torch.isin(lab.labels, torch.tensor([1, 3])).float())
    (both,) = run_node("VidSegSelectLabels", labels=lab, select="sky, water")
    assert torch.equal(both, (lab.labels != 0).float())
    (num,) = run_node("VidSegSelectLabels", labels=lab, select="3, 0")
    assert torch.equal(num, torch.isin(lab.labels, torch.tensor([0, 3])).float())
    with pytest.raises(errors.InputError, match=r"No label is called 'tree'.*1 \(sky\), 3 \(sky\), 4 \(water\)"):
        run_node("VidSegSelectLabels", labels=lab, select="tree")


def test_all_labels_lists_the_score_of_a_named_label():
    _, _, listing = run_node("VidSegAllLabelMasks", labels=_shared_name_labels())
    lines = listing.splitlines()
    assert lines[0] == f"0: cluster 0  rgb{labels_mod.palette_color(0)}"
    assert lines[1].endswith("score 0.750") and lines[3].endswith("score 0.625")


def test_colorize_legend_only_when_asked_and_only_named_labels():
    lab = _shared_name_labels()
    frames = torch.rand(T, H, W, 3, generator=torch.Generator().manual_seed(0))
    color, over = run_node("VidSegColorizeLabels", labels=lab, alpha=0.5, frames=frames)
    _, off = run_node("VidSegColorizeLabels", labels=lab, alpha=0.5, frames=frames, legend=False)
    assert torch.equal(off, over)  # off: byte-identical to the node without the input
    _, on = run_node("VidSegColorizeLabels", labels=lab, alpha=0.5, frames=frames, legend=True)
    box_img, top, left = legend_mod.legend_box(lab.table, H, W)
    bh, bw = box_img.shape[:2]
    assert (top, left) == (legend_mod.MARGIN, legend_mod.MARGIN) and bh < H and bw < W
    assert bh == 2 * legend_mod.PAD + 3 * (bh - 2 * legend_mod.PAD) // 3  # three rows
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[top:top + bh, left:left + bw] = True
    assert torch.equal(on[:, ~inside], over[:, ~inside])  # nothing outside the box changes
    expected = (torch.from_numpy(box_img).float() / 255).expand(T, -1, -1, -1)
    assert torch.equal(on[:, inside].reshape(T, bh, bw, 3), expected)
    box = torch.from_numpy(box_img)
    for v in (1, 3, 4):  # each named label's swatch
        assert (box == torch.tensor(labels_mod.palette_color(v), dtype=torch.uint8)).all(-1).sum() > 16
    assert not (box == torch.tensor(labels_mod.palette_color(0), dtype=torch.uint8)).all(-1).any()
    # three named rows: sky, sky, water; the unnamed cluster 0 has none
    assert [e.value for e in legend_mod.named_entries(lab.table)] == [1, 3, 4]
    unnamed = sockets.Labels(lab.labels, labels_mod.LabelTable.from_values([0, 1, 3, 4], kind="cluster"), (H, W),
                             False, {})
    _, plain = run_node("VidSegColorizeLabels", labels=unnamed, alpha=0.5, frames=frames)
    _, plain_on = run_node("VidSegColorizeLabels", labels=unnamed, alpha=0.5, frames=frames, legend=True)
    assert torch.equal(plain_on, plain)  # no names, no legend
