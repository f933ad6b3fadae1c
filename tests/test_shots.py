"""Shots of edited videos: cut detection, batches per shot, labels linked across shots (no shared data)."""
import numpy as np
import pytest
import torch

from vidseg_core.batching import plan_batches
from vidseg_core.errors import InputError
from vidseg_core.label_bank import LabelBank
from vidseg_core.shots import (FeatureCutCheck, FrameCutDetector, ShotSettings, frame_histograms, parse_cuts,
                               plan_shot_batches, shots_from_cuts)
from vidseg_core.synthetic import make_clip


def _clip(seed, n=10, size=(64, 112)):
    return torch.from_numpy(make_clip(n, size, seed=seed)[0]).float() / 255


def test_shots_from_cuts_and_errors():
    shots = shots_from_cuts(30, [20, 10, 10])
    assert [(s.start, s.stop) for s in shots] == [(0, 10), (10, 20), (20, 30)]
    with pytest.raises(InputError, match="outside the video"):
        shots_from_cuts(30, [30])
    with pytest.raises(InputError, match="outside the video"):
        shots_from_cuts(30, [0])
    assert parse_cuts("auto") == "auto" and parse_cuts("OFF") == "off" and parse_cuts("12, 40") == [12, 40]
    with pytest.raises(InputError, match="--cuts"):
        parse_cuts("12;40")
    with pytest.raises(InputError, match="cut detection"):
        ShotSettings(cuts="sometimes").check()
    with pytest.raises(InputError, match="link_threshold"):
        ShotSettings(link_threshold=2.0).check()


@pytest.mark.parametrize("n,b", [(1, 14), (13, 14), (14, 14), (29, 14), (200, 14), (7, 3)])
def test_one_shot_plan_is_the_paper_plan(n, b):
    plan = plan_shot_batches(shots_from_cuts(n, []), b)
    assert [(x.index, x.start, x.stop, x.write_start) for x in plan] == \
        [(x.index, x.start, x.stop, x.write_start) for x in plan_batches(n, b)]
    assert [x.first for x in plan] == [True] + [False] * (len(plan) - 1)


def test_batches_never_span_a_cut():
    cuts = [5, 9, 30]  # a 4-frame shot (shorter than B) is its own batch
    plan = plan_shot_batches(shots_from_cuts(40, cuts), 8)
    written = [f for b in plan for f in b.written]
    assert written == list(range(40))
    for b in plan:
        assert not any(b.start < c < b.stop for c in cuts) and not any(b.start < c <= b.stop - 1 for c in cuts)
    assert [(b.start, b.stop) for b in plan if b.first] == [(0, 5), (5, 9), (9, 17), (30, 38)]
    tail = [b for b in plan if b.shot == 2][-1]
    assert (tail.start, tail.stop, tail.write_start) == (22, 30, 25)  # the shot's last B frames, not across 30


def test_frame_detector_finds_hard_cuts_and_no_cut_in_one_scene():
    a, b, c = _clip(0), _clip(5), _clip(9)
    b = b.flip(2).mul(0.5)  # another scene: mirrored and darker
    c = 1 - c
    video = torch.cat([a, b, c, a])
    det = FrameCutDetector()
    assert det.detect(frame_histograms(video)) == [10, 20, 30]
    assert FrameCutDetector().detect(frame_histograms(_clip(0, 30))) == []
    assert det.detect(frame_histograms(video[:1])) == []


def test_frame_detector_places_one_cut_inside_a_dissolve():
    a, b = _clip(0), 1 - _clip(5)
    w = torch.linspace(0, 1, 8)[1:-1].view(-1, 1, 1, 1)
    video = torch.cat([a, (1 - w) * a[-1:] + w * b[:1], b])
    cuts = FrameCutDetector().detect(frame_histograms(video))
    assert len(cuts) == 1 and 10 <= cuts[0] <= 16


def test_feature_check_finds_a_collapse_inside_a_batch():
    g = torch.Generator().manual_seed(0)
    scene_a, scene_b = torch.randn(1, 4, 6, 16, generator=g), torch.randn(1, 4, 6, 16, generator=g)
    frames = torch.cat([scene_a + 0.05 * torch.randn(6, 4, 6, 16, generator=g),
                        scene_b + 0.05 * torch.randn(4, 4, 6, 16, generator=g)])
    check = FeatureCutCheck(2.0)
    assert check.scan(frames, 0) == 6
    check.reset()
    assert check.scan(frames[:6], 0) is None
    assert FeatureCutCheck(0.0).scan(frames, 0) is None


def test_label_bank_links_returning_clusters_and_gives_new_ids():
    bank = LabelBank(0.8, names={7: "swan"})
    e = torch.eye(6)
    bank.seed(e[:3], {0: 0, 1: 7, 2: 7}, "label", {"start": 0})
    assert bank.table.name_of(7) == "swan"
    # a new scene: two clusters unlike anything seen, one like the swan
    new = torch.stack([e[4], e[5], e[1] + 0.1 * e[4]])
    m = bank.link(new, [0, 1, 2], {"start": 10, "cut": "frames"})
    assert m[2] == 7 and m[0] not in (0, 7) and m[1] not in (0, 7, m[0])
    assert bank.table.name_of(7) == "swan" and len(bank.table) == 4
    # the first scene returns: its clusters get their old labels back
    m2 = bank.link(e[:3] + 0.01, [0, 1, 2], {"start": 20, "cut": "frames"})
    assert m2 == {0: 0, 1: 7, 2: 7} and bank.shots[-1]["new"] == []
    # a threshold of 1 never links
    assert set(LabelBank(1.0).link(e[:2], [0, 1], {"start": 0}).values()) == {0, 1}


def test_label_bank_records_label_shots():
    bank = LabelBank()
    bank.seed(torch.eye(3), {0: 0, 1: 1}, "cluster", {"start": 0})
    bank.note_labels(0, torch.tensor([[0, 1], [1, 1]]))
    bank.note_labels(12, torch.tensor([1]))
    assert bank.label_shots() == {0: [0], 1: [0, 12]}
    assert np.array_equal(sorted(bank.values), [0, 1])


def _two_scene_folder(folder):
    from PIL import Image

    folder.mkdir(parents=True)
    a = make_clip(4, (64, 128), seed=0)[0]
    for i, img in enumerate(list(a) + list(255 - a)):
        Image.fromarray(img).save(folder / f"f{i:03d}.png")
    return folder


def test_cli_segment_cuts(tmp_path, capsys):
    import json

    from vidseg_core.__main__ import main

    d = _two_scene_folder(tmp_path / "in")
    base = ["segment", str(d), "--model", "tiny-sd", "--mode", "fast", "--clusters", "2", "--batch-size", "3",
            "--quiet", "--device", "cpu", "--no-overlay"]
    assert main(base + ["--out", str(tmp_path / "auto")]) == 0
    shots = json.loads((tmp_path / "auto" / "summary.json").read_text())["shots"]
    assert shots["cut_detection"] == "frames" and shots["cuts"] == [4]
    assert [(s["start"], s["stop"]) for s in shots["shots"]] == [(0, 4), (4, 8)]
    assert main(base + ["--out", str(tmp_path / "user"), "--cuts", "2,4"]) == 0
    shots = json.loads((tmp_path / "user" / "summary.json").read_text())["shots"]
    assert shots["cut_detection"] == "user" and [s["start"] for s in shots["shots"]] == [0, 2, 4]
    assert main(base + ["--out", str(tmp_path / "off"), "--cuts", "off"]) == 0
    assert json.loads((tmp_path / "off" / "summary.json").read_text())["shots"]["cuts"] == []
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "bad"), "--cuts", "9"]) == 2
    assert "outside the video" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(base + ["--out", str(tmp_path / "bad"), "--cuts", "often"]) == 2
    assert "--cuts" in capsys.readouterr().err


def test_frame_histograms_of_uint8_and_float_frames_agree():
    x = torch.from_numpy(make_clip(2, (64, 112), seed=1)[0])
    assert torch.allclose(frame_histograms(x), frame_histograms(x.float() / 255))


def test_overlap_plan_repeats_frames_inside_a_shot_only():
    plan = plan_shot_batches(shots_from_cuts(30, [12]), 6, overlap=2)
    assert [f for b in plan for f in b.written] == list(range(30))
    assert all(b.size <= 6 and not (b.start < 12 < b.stop) for b in plan)
    assert [(b.start, b.write_start) for b in plan if b.shot == 0] == [(0, 0), (4, 6), (6, 10)]  # the tail: the shot's last B
    assert [(b.start, b.write_start) for b in plan if b.shot == 1][:2] == [(12, 12), (16, 18)]
    with pytest.raises(InputError, match="overlap"):
        plan_shot_batches(shots_from_cuts(30, []), 4, overlap=4)


def test_seam_relabel_follows_the_shared_frames():
    from vidseg_core.shot_context import seam_relabel

    prev = torch.tensor([[[0, 0, 7, 7]], [[0, 0, 7, 7]]])  # 2 shared frames, labelled by the batch before
    new = torch.tensor([[[0, 0, 3, 7]], [[0, 0, 3, 3]], [[0, 3, 3, 3]]])  # 3 mostly took 7's place
    out = seam_relabel(new, prev)
    assert torch.equal(out[:2], prev) and torch.equal(out[2], torch.tensor([[0, 7, 7, 7]]))
    same = torch.tensor([[[0, 0, 7, 7]], [[0, 0, 7, 7]], [[0, 7, 7, 7]]])
    assert torch.equal(seam_relabel(same, prev), same)  # agreeing labels are left alone


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_pipeline_with_seam_overlap_writes_every_frame_once(mode):
    from vidseg_core.backbones import load_backbone
    from vidseg_core.pipeline import SegmentSettings, VideoSegmenter

    bb = load_backbone("tiny-sd", device="cpu", precision="fp32")
    frames = _clip(0, 9, (64, 128))
    s = SegmentSettings(num_clusters=3, n_init=1, batch_size=4, mode=mode, shots=ShotSettings(overlap=2))
    seg = VideoSegmenter(bb, s)
    res = list(seg.run(lambda a, b: frames[a:b], 9, (64, 128)))
    assert [f for r in res for f in r.batch.written] == list(range(9))
    assert [(r.batch.start, r.batch.write_start) for r in res] == [(0, 0), (2, 4), (4, 6), (5, 8)]
    assert all(r.labels.shape[0] == len(r.batch.written) for r in res)
    assert seg.summary.shots["cuts"] == [] and seg.summary.settings["shots"]["overlap"] == 2


def test_seam_overlap_must_be_below_the_batch_size():
    from vidseg_core.pipeline import SegmentSettings

    with pytest.raises(InputError, match="seam overlap"):
        SegmentSettings(batch_size=3, shots=ShotSettings(overlap=3)).check()
    with pytest.raises(InputError, match="overlap"):
        SegmentSettings(shots=ShotSettings(overlap=-1)).check()


def test_a_new_scene_split_by_kmeans_into_alike_clusters_gets_one_label():
    bank = LabelBank(0.8)
    e = torch.eye(6)
    bank.seed(e[:2], {0: 0, 1: 1}, "cluster", {"start": 0})
    halves = torch.stack([e[4] + 0.2 * e[5], e[4] - 0.1 * e[5] + 0.1 * e[3], e[2]])
    m = bank.link(halves, [0, 1, 2], {"start": 9, "cut": "frames"})
    assert m[0] == m[1] and m[2] != m[0] and set(bank.shots[-1]["new"]) == {m[0], m[2]}


def test_feature_check_reads_the_device_once_per_batch():
    from tests.helpers.sync_counter import SyncCounter

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 6, 16, generator=g) + 0.05 * torch.randn(12, 4, 6, 16, generator=g)
    counts = []
    for n in (4, 12):
        check = FeatureCutCheck(1.6)
        with SyncCounter() as c:
            check.scan(x[:n], 0)
        counts.append(c)
    assert counts[0].events == counts[1].events and counts[1].total <= 1, counts[1].report()
