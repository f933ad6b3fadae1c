"""``python -m vidseg_core evaluate`` and the PNG reader, through ``vidseg_core.__main__.main``."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vidseg_core.__main__ import main
from vidseg_core.errors import InputError
from vidseg_core.metrics import evaluate_arrays, evaluate_dirs, read_label_png, read_label_sequence

PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [7] * (256 * 3 - 12)


def _save(folder, frames, mode="P", names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        name = names[i] if names else f"{i:05d}.png"
        if mode == "P":
            a = np.ascontiguousarray(f, np.uint8)
            im = Image.frombytes("P", (a.shape[1], a.shape[0]), a.tobytes())
            im.putpalette(PALETTE)
        elif mode == "L":
            im = Image.fromarray(np.asarray(f, np.uint8))
        else:  # RGB
            im = Image.fromarray(np.stack([np.asarray(f, np.uint8)] * 3, -1))
        im.save(folder / name)
    return folder


def _video(t=10, h=24, w=32):
    gt = np.zeros((t, h, w), np.uint8)
    gt[:, 4:12, 4:14] = 1
    gt[:, 14:22, 18:30] = 2
    return gt


def _run(capsys, *argv):
    rc = main(["evaluate", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------ reader
def test_reader_returns_palette_indices_sorted_by_name(tmp_path):
    frames = [np.full((4, 5), i % 3, np.uint8) for i in range(3)]
    d = _save(tmp_path / "p", frames, names=["b.png", "a.png", "c.png"])
    (d / "notes.txt").write_text("ignored")
    arr, names = read_label_sequence(d)
    assert names == ["a.png", "b.png", "c.png"]
    assert arr[:, 0, 0].tolist() == [1, 0, 2]       # raw indices, not palette colours
    assert Image.open(d / "b.png").mode == "P"
    _save(tmp_path / "l", [np.full((4, 5), 200, np.uint8)], mode="L")
    assert read_label_png(tmp_path / "l" / "00000.png").max() == 200


def test_reader_rejects_bad_folders(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_label_sequence(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No PNG"):
        read_label_sequence(tmp_path / "empty")
    _save(tmp_path / "rgb", [np.zeros((4, 5))], mode="RGB")
    with pytest.raises(InputError, match="RGB"):
        read_label_sequence(tmp_path / "rgb")
    _save(tmp_path / "sizes", [np.zeros((4, 5)), np.zeros((5, 5))])
    with pytest.raises(InputError, match="same size"):
        read_label_sequence(tmp_path / "sizes")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "00000.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="Cannot read"):
        read_label_sequence(tmp_path / "broken")


def test_pairs_predictions_with_ground_truth_by_file_name(tmp_path):
    from vidseg_core.metrics import read_pair

    gt = _video(t=4)
    g = _save(tmp_path / "gt", gt[[0, 2]], names=["00000.png", "00002.png"])  # sparse annotation
    p = _save(tmp_path / "pred", gt)  # a prediction for every frame, 00000..00003
    pred, gt_read, names = read_pair(p, g)
    assert names == ["00000.png", "00002.png"] and np.array_equal(pred, gt_read)
    # names win over sorted position: a prediction folder with an extra early frame is still paired right
    q = _save(tmp_path / "pred2", np.concatenate([gt[:1] * 0, gt]), names=["0.png"] + [f"{i:05d}.png" for i in range(4)])
    pred, gt_read, _ = read_pair(q, g)
    assert np.array_equal(pred, gt_read)


def test_pairing_falls_back_to_the_numbers_in_the_names_only_with_a_warning(tmp_path):
    from vidseg_core.metrics import read_pair

    gt = _video(t=3)
    g = _save(tmp_path / "gt", gt)
    p = _save(tmp_path / "pred", gt, names=[f"frame_{i}.png" for i in range(3)])
    with pytest.warns(UserWarning, match="paired by the number in their names, in numeric order"):
        pred, gt_read, _ = read_pair(p, g)
    assert np.array_equal(pred, gt_read)
    r = _save(tmp_path / "partial", gt[:2])  # 00000, 00001 + a stray name: 00002 has no prediction
    _save(r, gt[2:], names=["stray.png"])
    with pytest.warns(UserWarning, match=r"no prediction for 1 of the 3 ground-truth frames \(00002.png\): only "
                                         r"the 2 frames with a prediction are evaluated"):
        pred, gt_read, names = read_pair(r, g)
    assert names == ["00000.png", "00001.png"] and np.array_equal(pred, gt_read)
    with pytest.raises(InputError, match=r"no prediction for 1 of the 3 ground-truth frames \(00002.png\)"):
        read_pair(r, g, require_all=True)
    s = _save(tmp_path / "strangers", gt[:2], names=["x.png", "y.png"])  # no name in common, counts differ
    with pytest.raises(InputError, match="cannot be paired by the numbers in their names: the predictions are 2"):
        read_pair(s, g)


def test_cli_evaluates_a_segmented_frame_range_against_longer_ground_truth(tmp_path, capsys):
    gt = _video(t=6)
    g = _save(tmp_path / "gt", gt)
    p = _save(tmp_path / "pred", gt[:4])
    rc, out, err = _run(capsys, "--pred", p, "--gt", g, "--metrics", "miou")
    res = json.loads(out)
    assert rc == 0 and res["frames"] == 4 and res["ground_truth_frames_without_prediction"] == 2
    assert res["miou"]["miou"] == 1.0
    assert err.startswith("warning: ") and "no prediction for 2 of the 6 ground-truth frames" in err
    rc, out, err = _run(capsys, "--pred", p, "--gt", g, "--metrics", "miou", "--require-all-frames")
    assert rc == 2 and out == "" and "Fix:" in err


# ------------------------------------------------------------------ command
def test_cli_perfect_prediction(tmp_path, capsys):
    gt = _video()
    g = _save(tmp_path / "gt", gt)
    p = _save(tmp_path / "pred", gt, mode="L")
    rc, out, _ = _run(capsys, "--pred", p, "--gt", g)
    assert rc == 0
    res = json.loads(out)
    assert res["frames"] == 10 and res["height_width"] == [24, 32]
    assert res["miou"]["miou"] == 1.0 and res["miou"]["num_classes"] == 3
    assert res["vc8"]["value"] == 1.0 and res["vc8"]["windows"] == 2
    assert res["vc16"]["value"] is None and res["vc16"]["skipped_videos"] == 1
    assert res["jf"]["protocol"] == "semi" and res["jf"]["J&F-Mean"] == 1.0 and res["jf"]["frames_scored"] == 8


def test_cli_matches_in_process_functions(tmp_path, capsys):
    rng = np.random.default_rng(0)
    gt = _video()
    pred = gt.copy()
    pred[rng.random(pred.shape) < 0.05] = 1
    g, p = _save(tmp_path / "gt", gt), _save(tmp_path / "pred", pred)
    rc, out, _ = _run(capsys, "--pred", p, "--gt", g, "--metrics", "jf,miou", "--per-frame",
                      "--num-classes", "4", "--out", tmp_path / "r.json")
    assert rc == 0
    res = json.loads(out)
    assert res == evaluate_dirs(p, g, metrics="miou,jf", num_classes=4, per_frame=True)
    assert res == json.loads((tmp_path / "r.json").read_text())
    arr = evaluate_arrays(pred, gt, metrics=["miou", "jf"], num_classes=4, per_frame=True)
    assert arr["miou"] == res["miou"] and arr["jf"]["J&F-Mean"] == res["jf"]["J&F-Mean"]
    assert "vc8" not in res and len(res["jf"]["objects"][0]["J"]) == 8
    assert 0 < res["miou"]["miou"] < 1 and res["miou"]["class_iou"][3] is None


def test_cli_blackswan_fixture(blackswan_dir, capsys):
    rc, out, _ = _run(capsys, "--pred", blackswan_dir / "masks_rvos", "--gt", blackswan_dir / "masks_osvos",
                      "--protocol", "unsupervised", "--per-frame")
    assert rc == 0
    res = json.loads(out)
    jf = res["jf"]
    assert jf["J&F-Mean"] == pytest.approx(0.940131, abs=1e-6)
    assert (jf["J_mean"], jf["J_recall"], jf["J_decay"]) == pytest.approx((0.926774, 1.0, 0.017951), abs=1e-6)
    assert (jf["F_mean"], jf["F_recall"], jf["F_decay"]) == pytest.approx((0.953488, 1.0, 0.034042), abs=1e-6)
    assert jf["objects"][0]["F"][:5] == pytest.approx([0.966296, 0.979120, 0.937528, 0.968200, 0.933002], abs=1e-6)
    assert res["vc8"]["value"] == pytest.approx(0.990011, abs=1e-6) and res["vc8"]["windows"] == 42
    assert res["vc16"]["value"] == pytest.approx(0.988031, abs=1e-6) and res["vc16"]["windows"] == 34
    assert res["miou"]["out_of_range_pred_pixels"] > 0  # rvos fragments 2..20 are wrong for a 2-class GT


def test_cli_dataset_layout_pools_videos(tmp_path, capsys):
    a, b = _video(12), _video(9)
    b_pred = b.copy()
    b_pred[:, :, :16] = 0
    _save(tmp_path / "gt" / "v1", a)
    _save(tmp_path / "gt" / "v2", b)
    _save(tmp_path / "pred" / "v1", a)
    _save(tmp_path / "pred" / "v2", b_pred)
    rc, out, _ = _run(capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--metrics", "miou,vc8,jf")
    assert rc == 0
    res = json.loads(out)
    assert res["videos"] == 2 and res["sequences"] == ["v1", "v2"] and res["frames"] == 21
    assert res["vc8"]["windows"] == (12 - 8) + (9 - 8)
    assert len(res["jf"]["objects"]) == 4
    one = evaluate_arrays(np.concatenate([a, b_pred]), np.concatenate([a, b]), metrics="miou")
    assert res["miou"]["miou"] == pytest.approx(one["miou"]["miou"])  # one global confusion matrix


def test_cli_vspw_remap(tmp_path, capsys):
    raw = np.zeros((9, 6, 6), np.uint8)
    raw[:, :3] = 12
    raw[:, 3:, :3] = 124
    raw[:, 5, 5] = 255
    pred = np.where(raw == 12, 11, np.where(raw == 124, 123, 50)).astype(np.uint8)
    g, p = _save(tmp_path / "gt", raw), _save(tmp_path / "pred", pred)
    rc, out, _ = _run(capsys, "--pred", p, "--gt", g, "--metrics", "miou", "--vspw-remap")
    res = json.loads(out)["miou"]
    assert rc == 0 and res["num_classes"] == 124 and res["miou"] == 1.0 and res["vspw_remap"]
    rc, out, _ = _run(capsys, "--pred", g, "--gt", g, "--metrics", "miou", "--vspw-remap", "--remap-pred")
    assert rc == 0 and json.loads(out)["miou"]["miou"] == 1.0


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "No PNG"),
    ("count", "has 9 PNG frames but"),
    ("size", "Resize the predictions"),
    ("rgb", "RGB"),
    ("metric", "Unknown or missing metric"),
    ("semi_ids", "Map predicted ids"),
    ("layout", "No prediction folder"),
])
def test_cli_bad_inputs(tmp_path, capsys, case, message):
    gt = _video()
    g = _save(tmp_path / "gt", gt)
    p = tmp_path / "pred"
    extra = []
    if case == "missing":
        pass
    elif case == "empty":
        p.mkdir()
    elif case == "count":  # a missing frame is only an error when every frame is required
        _save(p, gt[:9])
        extra = ["--require-all-frames"]
    elif case == "size":
        _save(p, gt[:, :20])
    elif case == "rgb":
        _save(p, gt, mode="RGB")
    elif case == "metric":
        _save(p, gt)
        extra = ["--metrics", "miou,tc"]
    elif case == "semi_ids":
        bad = gt.copy()
        bad[3, 0, 0] = 5
        _save(p, bad)
    elif case == "layout":
        g = tmp_path / "ds"
        _save(g / "v1", gt)
        p.mkdir()
    rc, out, err = _run(capsys, "--pred", p, "--gt", g, *extra)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and message in err and "Fix:" in err


def _moving(t=12, h=24, w=32):
    """Frames that differ: an object moving one column per frame."""
    gt = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        gt[i, 4:20, i:i + 8] = 1
    return gt


def test_cli_pairs_unmatched_names_by_their_numbers_and_says_so(tmp_path, capsys):
    """frame_0..frame_11 against 00000..00011: paired by number (not text order, which scored 0.754)."""
    gt = _moving()
    g = _save(tmp_path / "gt", gt)
    p = _save(tmp_path / "pred", gt, names=[f"frame_{i}.png" for i in range(12)])
    rc, out, err = _run(capsys, "--pred", p, "--gt", g, "--metrics", "miou")
    assert rc == 0 and json.loads(out)["miou"]["miou"] == 1.0
    assert "paired by the number in their names, in numeric order (frame_0.png -> 00000.png, frame_1.png -> " \
           "00001.png, ..., frame_10.png -> 00010.png, frame_11.png -> 00011.png)" in err


@pytest.mark.parametrize("names, why", [
    ([f"{c}.png" for c in "abcdefghijkl"], "holds no number"),
    ([f"take{i % 6}{'ab'[i // 6]}.png" for i in range(12)], "hold the same number"),
])
def test_cli_refuses_names_that_neither_match_nor_number(tmp_path, capsys, names, why):
    gt = _moving()
    g = _save(tmp_path / "gt", gt)
    p = _save(tmp_path / "pred", gt, names=names)
    rc, out, err = _run(capsys, "--pred", p, "--gt", g, "--metrics", "miou")
    assert rc == 2 and out == "" and why in err and "cannot be paired by the numbers" in err
