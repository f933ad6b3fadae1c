"""Edited videos built from the shared clips: cuts found, labels kept across shots, single shots unchanged.

Oracle features (ground truth one-hot plus noise, see ``tests/helpers/edited_clips.py``) show that the
machinery does what it claims; the tiny random backbone runs the whole pipeline (its features carry
little meaning, so only structure and invariance are checked with it).
"""
import numpy as np
import pytest
import torch

from helpers.edited_clips import data_dir, edited_sequence, fast_pan, load_scenes, oracle_video_features
from vidseg_core.pipeline import SegmentSettings, segment_video
from vidseg_core.shot_context import coarse_segment_shots
from vidseg_core.shots import FrameCutDetector, ShotSettings, frame_histograms

DATA = data_dir()
pytestmark = pytest.mark.skipif(DATA is None, reason="shared test data not found (blackswan/frames, "
                                                     "blackswan/masks_osvos, bedroom/frames)")


@pytest.fixture(scope="module")
def scenes():
    return load_scenes(DATA)


def _oracle(seq, cuts="auto", frames=True, batch=8, **shot_kw):
    s = SegmentSettings(num_clusters=6, n_init=2, reference_mask=seq.gt[0], names={1: "swan"},
                        shots=ShotSettings(cuts=cuts, **shot_kw))
    return coarse_segment_shots(oracle_video_features(seq, 0.3), s, batch,
                                frames=torch.from_numpy(seq.frames) if frames else None)


def _returning_agreement(seq, labels):
    """Fraction of A's cells with the same label on its return as on its first appearance (same frame)."""
    first = {j: i for i, (n, j) in enumerate(seq.source) if n == "A" and i < 14}
    pairs = [(first[j], i) for i, (n, j) in enumerate(seq.source) if n == "A" and i >= 14 and j in first]
    return float(np.mean([(labels[a] == labels[b]).mean() for a, b in pairs]))


@pytest.mark.parametrize("order", ["A|B", "A|B|A", "A|B|C|A"])
def test_frame_detector_finds_every_hard_cut(scenes, order):
    seq = edited_sequence(scenes, order)
    assert FrameCutDetector().detect(frame_histograms(torch.from_numpy(seq.frames))) == seq.cuts


def test_no_false_cut_in_a_fast_pan_or_a_moving_camera(scenes):
    assert FrameCutDetector().detect(frame_histograms(torch.from_numpy(fast_pan(DATA).frames))) == []
    assert FrameCutDetector().detect(frame_histograms(torch.from_numpy(scenes["B"].frames))) == []
    assert FrameCutDetector().detect(frame_histograms(torch.from_numpy(scenes["A"].frames))) == []


def test_one_cut_inside_a_dissolve(scenes):
    seq = edited_sequence(scenes, "A|B", fade=6)
    cuts = FrameCutDetector().detect(frame_histograms(torch.from_numpy(seq.frames)))
    (a, b), = seq.fades
    assert len(cuts) == 1 and a <= cuts[0] < b


def test_a_returning_scene_gets_its_labels_back_and_a_new_scene_new_ones(scenes):
    seq = edited_sequence(scenes, "A|B|C|A")
    labels, table, summary = _oracle(seq)
    labels = labels.numpy()
    assert summary["cuts"] == seq.cuts
    shots = summary["shots"]
    assert [s["start"] for s in shots] == [0] + seq.cuts
    assert shots[3]["new"] == [] and set(shots[3]["clusters"].values()) <= {0, 1}  # A again: its own labels
    a_labels = {0, 1}
    for k in (1, 2):  # B and C: new labels only
        assert shots[k]["linked"] == {} and not set(shots[k]["clusters"].values()) & a_labels
    b_cells = labels[14:34]
    assert np.isin(b_cells, list(a_labels)).mean() == 0.0
    assert _returning_agreement(seq, labels) > 0.95
    assert table.name_of(1) == "swan" and summary["label_shots"]["1"] == [0, 3]
    # without cut detection B is labelled with A's labels (what this machinery prevents)
    off, _, off_summary = _oracle(seq, cuts="off")
    assert off_summary["shots"][0]["stop"] == len(seq.frames) and np.isin(off.numpy()[14:34], [0, 1]).all()


def test_the_feature_check_finds_cuts_the_frames_do_not_show(scenes):
    seq = edited_sequence(scenes, "A|B|A")
    labels, _, summary = _oracle(seq, frames=False)  # no frames: only the features can tell
    assert summary["frame_cuts"] == [] and summary["feature_cuts"] == seq.cuts
    assert _returning_agreement(seq, labels.numpy()) > 0.95
    _, _, none = _oracle(seq, frames=False, feature_collapse=0.0)
    assert none["cuts"] == []


def test_user_cuts(scenes):
    seq = edited_sequence(scenes, "A|B|A")
    _, _, summary = _oracle(seq, cuts=[14, 34])
    assert summary["cut_detection"] == "user" and summary["cuts"] == [14, 34]


def test_link_threshold_one_gives_every_shot_new_labels(scenes):
    seq = edited_sequence(scenes, "A|B|A")
    _, _, summary = _oracle(seq, link_threshold=1.0)
    assert summary["shots"][2]["linked"] == {} and summary["shots"][2]["new"]


# ---------------------------------------------------------------- the pipeline (tiny backbone)
def _small(frames, size=(128, 224)):
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    return torch.nn.functional.interpolate(x, size=size, mode="area").permute(0, 2, 3, 1).div(255)


@pytest.fixture(scope="module")
def tiny():
    from vidseg_core.backbones import load_backbone

    return load_backbone("tiny-sd", device="cpu", precision="fp32")


def test_single_shot_outputs_are_unchanged_by_cut_detection(scenes, tiny):
    frames = _small(scenes["B"].frames[:13])  # one shot, three batches (the last an overlapping tail)
    ref = np.zeros((128, 224), np.int64)
    ref[:, 100:] = 3
    out = {}
    for cuts in ("off", "auto"):
        s = SegmentSettings(num_clusters=4, n_init=2, batch_size=5, mode="fast", reference_mask=ref, reference_frame=6,
                            shots=ShotSettings(cuts=cuts))
        out[cuts] = segment_video(tiny, frames, s, keep_coarse=True)
    assert out["auto"][2].shots["cuts"] == []
    assert torch.equal(out["off"][0], out["auto"][0]) and torch.equal(out["off"][1], out["auto"][1])
    assert out["off"][2].table == out["auto"][2].table


def test_pipeline_follows_the_shots_of_an_edited_video(scenes, tiny):
    seq = edited_sequence(scenes, "A|B|A")
    frames = _small(seq.frames)
    s = SegmentSettings(num_clusters=4, n_init=2, batch_size=8, mode="fast")
    labels, coarse, summary = segment_video(tiny, frames, s, keep_coarse=True)
    shots = summary.shots
    assert shots["frame_cuts"] == seq.cuts and [x["start"] for x in shots["shots"]] == [0, 14, 34]
    assert set(labels.unique().tolist()) <= set(summary.table.values)
    assert set(int(v) for v in shots["label_shots"]) == set(summary.table.values)
    for v, where in shots["label_shots"].items():  # a label is listed in the shots whose frames hold it
        for i, sh in enumerate(shots["shots"]):
            assert (i in where) == bool((coarse[sh["start"]:sh["stop"]] == int(v)).any())


def test_reference_in_a_later_shot_names_that_shot_and_links_the_others(scenes):
    seq = edited_sequence(scenes, "A|B|A")
    s = SegmentSettings(num_clusters=6, n_init=2, reference_mask=seq.gt[20], reference_frame=20,
                        names={2: "dark", 3: "mid", 4: "bright"}, shots=ShotSettings(cuts="auto"))
    labels, table, summary = coarse_segment_shots(oracle_video_features(seq, 0.3), s, 8,
                                                  frames=torch.from_numpy(seq.frames))
    shots = summary["shots"]
    assert [x["anchor"] for x in shots] == ["linked", "reference", "linked"]
    assert set(shots[1]["clusters"].values()) <= {2, 3, 4} and table.name_of(2) == "dark"
    assert not set(shots[0]["clusters"].values()) & {2, 3, 4}  # A: new labels, B's names stay B's
    assert shots[2]["new"] == [] and set(shots[2]["clusters"].values()) <= set(shots[0]["clusters"].values())
    # A without a mask: KMeans splits its background into several labels; by the region each label stands for
    # (its majority ground truth), A's return is labelled as its first appearance
    lab = labels.numpy()
    region = {v: np.bincount(seq.gt[lab == v]).argmax() for v in np.unique(lab)}
    assert _returning_agreement(seq, np.vectorize(region.get)(lab)) > 0.95
