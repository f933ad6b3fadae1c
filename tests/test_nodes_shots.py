"""Shots of edited videos in the nodes, run as ComfyUI runs them (stand-ins, ``tiny-sd`` on the CPU).

* Segment Video with ``cuts = list`` on an A|B|A clip gives the library's labels with the same settings;
  ``cuts = off`` gives the one-shot library run; the default (auto) finds the cuts; the ``shots`` output;
* bad ``cut_frames`` are refused with the problem and the fix;
* Detect Cuts finds the same cuts on an IMAGE batch and on a VIDEO of it;
* KNN Context Model with shots equals :func:`coarse_segment_shots`; without, it is unchanged;
* the overlay (IMAGE and VIDEO outputs, and the CLI's overlay video) has a white border on each new shot's
  first frame only; without a cut it is unchanged.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from tests.helpers.comfy_executor_standin import run_node as comfy_run
from tools.pack_loader import load_pack, pack_nodes

PACK = load_pack()
NODES = pack_nodes(PACK)
errors = sys.modules["vidseg_pack.vidseg_core.errors"]
pipeline = sys.modules["vidseg_pack.vidseg_core.pipeline"]
shots_mod = sys.modules["vidseg_pack.vidseg_core.shots"]
shot_context = sys.modules["vidseg_pack.vidseg_core.shot_context"]
label_io = sys.modules["vidseg_pack.vidseg_core.label_io"]
from vidseg_core.synthetic import make_clip  # noqa: E402 - data only
VideoStream = sys.modules["vidseg_pack.vidseg_core.video_stream"].VideoStream

H, W, B, K = 64, 128, 3, 3
CUTS = [4, 8]


def _aba():
    """A|B|A: 4 frames of a synthetic clip, 4 of its colour negative, the 4 first again (uint8)."""
    a = make_clip(4, (H, W), seed=0)[0]
    return np.concatenate([a, 255 - a, a])


U8 = _aba()
FRAMES = torch.from_numpy(U8).float() / 255
ARGS = dict(num_clusters=K, mode="fast", batch_size=B)


def run_node(node_id, **inputs):
    with torch.inference_mode():
        return comfy_run(NODES[node_id], **inputs)[0]


@pytest.fixture(scope="module")
def model():
    (handle,) = run_node("VidSegLoadModel", model="tiny-sd", precision="auto", device="cpu")
    return handle


@pytest.fixture(scope="module")
def segmented(model):
    """Segment Video with cuts auto (default), list and off."""
    return {mode: run_node("VidSegSegmentVideo", model=model, frames=FRAMES, **ARGS,
                           **({} if mode == "default" else {"cuts": mode}),
                           **({"cut_frames": "4, 8"} if mode == "list" else {}))
            for mode in ("default", "list", "off")}


def _library(model, cuts):
    settings = pipeline.SegmentSettings(num_clusters=K, batch_size=B, mode="fast", seed=1,
                                        shots=shots_mod.ShotSettings(cuts=cuts))
    with torch.inference_mode():
        return pipeline.segment_video(model.backbone, FRAMES, settings)


@pytest.mark.parametrize("mode, cuts", [("list", CUTS), ("off", "off"), ("default", "auto"), ("list", [6])])
def test_segment_video_gives_the_library_labels_with_the_same_shots(model, segmented, mode, cuts):
    labels, summary = _library(model, cuts)
    out = segmented[mode] if cuts != [6] else run_node("VidSegSegmentVideo", model=model, frames=FRAMES, **ARGS,
                                                       cuts="list", cut_frames="6")
    assert torch.equal(out[0].labels, labels)
    assert out[0].table.to_dict() == summary.table.to_dict()
    assert out[7]["cuts"] == summary.shots["cuts"] == ([] if mode == "off" else [6] if cuts == [6] else CUTS)


def test_cuts_change_the_labels_and_the_shots_output(segmented):
    shots = segmented["list"][7]
    assert shots["cut_detection"] == "user" and shots["num_frames"] == 12 and shots["frame_cuts"] == CUTS
    assert [(s["start"], s["stop"]) for s in shots["shots"]] == [(0, 4), (4, 8), (8, 12)]
    assert shots["settings"]["cuts"] == CUTS and shots["settings"]["overlap"] == 0
    assert set(shots["label_shots"]) == {str(v) for v in segmented["list"][0].table.values}
    auto = segmented["default"][7]
    assert auto["cut_detection"] == "frames" and auto["frame_cuts"] == CUTS
    assert [s["anchor"] for s in auto["shots"]] == ["first frame", "linked", "linked"]
    off = segmented["off"][7]
    assert off["cut_detection"] == "off" and off["cuts"] == [] and len(off["shots"]) == 1
    assert not torch.equal(segmented["off"][0].labels, segmented["list"][0].labels)


def test_info_names_the_cuts_their_source_and_the_shots_of_each_label(segmented):
    info = segmented["list"][4]
    line = next(x for x in info.splitlines() if x.startswith("cuts:"))
    assert line.startswith("cuts: 2 at frame 4 (user), 8 (user); 3 shot(s); labels per shot: ")
    for v, s in segmented["list"][7]["label_shots"].items():
        assert f"{v} in {'shot' if len(s) == 1 else 'shots'} {','.join(map(str, s))}" in line
    assert "cuts: 2 at frame 4 (frames), 8 (frames)" in segmented["default"][4]
    assert "cuts: off (one shot)" in segmented["off"][4]


@pytest.mark.parametrize("cuts, frames, problem, fix", [
    ("list", "", "gives no frame", "cut_frames"),
    ("list", "4, eight", "'eight' is not a frame number", "whole numbers"),
    ("auto", "4", "cuts is 'auto', which would ignore them", "cuts = list"),
    ("off", "4,8", "cuts is 'off'", "clear cut_frames"),
    ("list", "0, 4", "frame 0", "1 or later"),
    ("list", "4, 12", "12 lie past the video's last frame 11", "1..11"),
])
def test_bad_cut_frames_are_refused_with_the_fix(model, cuts, frames, problem, fix):
    with pytest.raises(errors.InputError) as e:
        run_node("VidSegSegmentVideo", model=model, frames=FRAMES, **ARGS, cuts=cuts, cut_frames=frames)
    assert problem in e.value.problem and fix in e.value.fix


def test_a_seam_overlap_not_below_the_batch_size_is_refused_before_the_run(model):
    with pytest.raises(errors.InputError, match="overlap"):
        run_node("VidSegSegmentVideo", model=model, frames=FRAMES, **ARGS, seam_overlap=B)


# ------------------------------------------------------------------ overlay marks
def _border(img, w=label_io.CUT_BORDER):
    ring = torch.ones(img.shape[:2], dtype=torch.bool)
    ring[w:-w, w:-w] = False
    return img[ring]


def test_the_overlay_marks_the_first_frame_of_each_shot_only(segmented):
    over, plain = segmented["list"][3], segmented["off"][3]
    white = [t for t in range(12) if bool((_border(over[t]) == 1).all())]
    assert white == CUTS
    assert not any(bool((_border(plain[t]) == 1).all()) for t in range(12))
    inner = slice(label_io.CUT_BORDER, -label_io.CUT_BORDER)
    unmarked = label_io.overlay(FRAMES, segmented["list"][0].labels, segmented["list"][0].table, 0.5).clamp(0, 1)
    assert torch.equal(over[:, inner, inner], unmarked[:, inner, inner])
    assert torch.equal(over[[0, 1, 2, 3, 5, 6, 7, 9, 10, 11]], unmarked[[0, 1, 2, 3, 5, 6, 7, 9, 10, 11]])


def test_without_a_cut_the_overlay_is_unchanged_byte_for_byte(segmented):
    over = segmented["off"][3]
    expected = label_io.overlay(FRAMES, segmented["off"][0].labels, segmented["off"][0].table, 0.5).clamp(0, 1)
    assert torch.equal(over, expected)
    x = torch.rand(2, 8, 8, 3)
    assert label_io.mark_cuts(x, []) is x and label_io.mark_cuts(x, [5]) is x


def test_the_overlay_video_marks_the_cut_frames(segmented):
    pytest.importorskip("av")
    with VideoStream(segmented["list"][5].get_stream_source()) as vs:
        frames = vs.read(0, len(vs))
    border = torch.stack([_border(f).float().mean() for f in frames])  # lossy H.264: a bright ring, not exact
    assert [t for t in range(12) if border[t] > 0.9] == CUTS
    with VideoStream(segmented["off"][5].get_stream_source()) as vs:
        assert all(_border(f).float().mean() < 0.9 for f in vs.read(0, len(vs)))


def test_mark_cuts_draws_a_white_ring_on_float_and_uint8_frames():
    x = torch.zeros(3, 10, 12, 3)
    m = label_io.mark_cuts(x, [1], width=2)
    assert m is not x and torch.equal(x, torch.zeros_like(x)) and torch.equal(m[[0, 2]], x[[0, 2]])
    assert (_border(m[1], 2) == 1).all() and (m[1, 2:-2, 2:-2] == 0).all()
    u = label_io.mark_cuts(torch.zeros(1, 10, 12, 3, dtype=torch.uint8), [0], width=2)
    assert (_border(u[0], 2) == 255).all()


# ------------------------------------------------------------------ Detect Cuts
def test_detect_cuts_on_an_image_batch_and_on_a_video_agree(tmp_path):
    pytest.importorskip("av")
    from tests.helpers.comfy_video_standin import VideoFromFile, write_test_video

    shots, info = run_node("VidSegDetectCuts", frames=FRAMES)
    assert shots["cut_detection"] == "frames" and shots["cuts"] == shots["frame_cuts"] == CUTS
    assert [(s["start"], s["stop"]) for s in shots["shots"]] == [(0, 4), (4, 8), (8, 12)]
    assert info.startswith("12 frames; cuts: 2 at frame 4 (frames), 8 (frames)") and "not a cut" in info
    assert shots_mod.FrameCutDetector().detect(shots_mod.frame_histograms(FRAMES)) == CUTS
    video = VideoFromFile(write_test_video(tmp_path / "aba.mp4", U8, 12))
    from_video, _ = run_node("VidSegDetectCuts", video=video, batch_size=5)
    assert from_video["frame_cuts"] == CUTS and from_video["num_frames"] == 12
    strict, _ = run_node("VidSegDetectCuts", frames=FRAMES, ratio=100.0)  # the detector settings are used
    assert strict["cuts"] == []
    listed, _ = run_node("VidSegDetectCuts", frames=FRAMES, cuts="list", cut_frames="6")
    assert listed["cut_detection"] == "user" and listed["cuts"] == [6]
    off, _ = run_node("VidSegDetectCuts", frames=FRAMES, cuts="off")
    assert off["cuts"] == [] and len(off["shots"]) == 1
    with pytest.raises(errors.InputError, match="past the video's last frame"):
        run_node("VidSegDetectCuts", frames=FRAMES, cuts="list", cut_frames="40")


# ------------------------------------------------------------------ the stage nodes with shots
@pytest.fixture(scope="module")
def features(model):
    (feats,) = run_node("VidSegExtractFeatures", model=model, frames=FRAMES, batch_size=B)
    return feats


def _stage(features, shots=None, reference_frame=0, seam_overlap=0):
    (clusters,) = run_node("VidSegKMeansInit", features=features, num_clusters=K, reference_frame=reference_frame,
                           shots=shots)
    (coarse,) = run_node("VidSegKNNContextModel", features=features, clusters=clusters, shots=shots)
    return clusters, coarse


@pytest.mark.parametrize("reference_frame, overlap", [(0, 0), (5, 1)])
def test_knn_context_model_with_shots_equals_the_shot_driver(features, reference_frame, overlap):
    shots, _ = run_node("VidSegDetectCuts", frames=FRAMES, seam_overlap=overlap)
    _, coarse = _stage(features, shots, reference_frame)
    settings = pipeline.SegmentSettings(num_clusters=K, reference_frame=reference_frame, seed=1,
                                        shots=shots_mod.ShotSettings(overlap=overlap))
    with torch.inference_mode():
        labels, table, summary = shot_context.coarse_segment_shots(features, settings, B, frames=FRAMES)
    assert torch.equal(coarse.labels, labels) and coarse.table.to_dict() == table.to_dict()
    assert coarse.meta["shots"] == summary and summary["cuts"] == CUTS


def test_knn_context_model_without_shots_is_unchanged(features):
    _, coarse = _stage(features)
    with torch.inference_mode():
        ref = sys.modules["vidseg_pack.vidseg_core.context_model"].coarse_segment(features, K, B)
    assert torch.equal(coarse.labels, ref.labels) and "shots" not in coarse.meta
    _, shot_aware = _stage(features, run_node("VidSegDetectCuts", frames=FRAMES)[0])
    assert not torch.equal(coarse.labels, shot_aware.labels)


def test_clusters_that_span_a_cut_are_refused_with_the_fix(features):
    shots, _ = run_node("VidSegDetectCuts", frames=FRAMES)
    (clusters,) = run_node("VidSegKMeansInit", features=features, num_clusters=K, reference_frame=5)
    assert (clusters.batch_start, clusters.batch_stop) == (3, 6)  # the paper's batch, across the cut at 4
    with pytest.raises(errors.InputError) as e:
        run_node("VidSegKNNContextModel", features=features, clusters=clusters, shots=shots)
    assert "leave the reference frame's shot" in e.value.problem and "KMeans Init" in e.value.fix
    short, _ = run_node("VidSegDetectCuts", frames=FRAMES[:6])
    with pytest.raises(errors.InputError, match="6 frames"):
        run_node("VidSegKNNContextModel", features=features, clusters=clusters, shots=short)
    with pytest.raises(errors.InputError, match="VIDSEG_SHOTS"):
        run_node("VidSegKNNContextModel", features=features, clusters=clusters, shots=[4, 8])


def test_the_cli_overlay_video_marks_the_cut_frames(tmp_path, monkeypatch):
    from PIL import Image

    import vidseg_core.label_io as cli_io
    from vidseg_core.__main__ import main

    folder = tmp_path / "in"
    folder.mkdir()
    for i, img in enumerate(U8[:8]):  # A|B: a cut at frame 4
        Image.fromarray(img).save(folder / f"f{i:03d}.png")
    written = []
    monkeypatch.setattr(cli_io.OverlayVideoWriter, "write", lambda self, frames: written.append(frames.clone()))
    monkeypatch.setattr(cli_io.OverlayVideoWriter, "close", lambda self: None)
    base = ["segment", str(folder), "--model", "tiny-sd", "--mode", "fast", "--clusters", "2", "--batch-size", "3",
            "--quiet", "--device", "cpu", "--serial-writes"]
    for cuts, expected in (("auto", [4]), ("off", [])):
        written.clear()
        assert main(base + ["--out", str(tmp_path / cuts), "--cuts", cuts]) == 0
        frames = torch.cat(written)
        assert frames.shape[0] == 8
        assert [t for t in range(8) if bool((_border(frames[t]) == 1).all())] == expected
