"""Metrics: regression values of the official DAVIS / VSPW code (docs/design/metrics.md#regression-values-from-the-official-code) and synthetic rules."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vidseg_core.errors import InputError
from vidseg_core.metrics import (
    ConfusionMatrix,
    VideoConsistency,
    boundary_map,
    boundary_measure,
    boundary_tolerance,
    davis_statistics,
    decay_bins,
    evaluate_arrays,
    evaluate_semi_supervised,
    evaluate_unsupervised,
    mean_iou,
    read_label_sequence,
    region_similarity,
    video_consistency,
    vspw_remap,
)
from vidseg_core.metrics import jf

TOL = 1e-6


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def blackswan_pair(blackswan_dir):
    """(prediction = masks_rvos, GT = masks_osvos), all 50 frames as palette indices."""
    gt, _ = read_label_sequence(blackswan_dir / "masks_osvos")
    pred, _ = read_label_sequence(blackswan_dir / "masks_rvos")
    assert gt.shape == pred.shape == (50, 480, 854)
    return pred, gt


@pytest.fixture(scope="module")
def blackswan_unsup(blackswan_pair):
    pred, gt = blackswan_pair
    return evaluate_unsupervised(pred, gt)


def _square(shift=0, h=480, w=854):
    m = np.zeros((h, w), np.uint8)
    m[100:200, 100 + shift:200 + shift] = 1
    return m


# ------------------------------------------------------- §1.7 regression values
def test_blackswan_unsupervised_matches_official(blackswan_unsup):
    r = blackswan_unsup
    assert r.frames_scored == 50 and len(r.objects) == 1
    assert r.objects[0].proposal_id == 1  # the Hungarian matching picks rvos id 1
    assert r.J_mean == pytest.approx(0.926774, abs=TOL)
    assert r.J_recall == pytest.approx(1.0, abs=TOL)
    assert r.J_decay == pytest.approx(0.017951, abs=TOL)
    assert r.F_mean == pytest.approx(0.953488, abs=TOL)
    assert r.F_recall == pytest.approx(1.0, abs=TOL)
    assert r.F_decay == pytest.approx(0.034042, abs=TOL)
    assert r.jf_mean == pytest.approx(0.940131, abs=TOL)


def test_blackswan_per_frame_j_f(blackswan_unsup):
    obj = blackswan_unsup.objects[0]
    assert len(obj.J) == len(obj.F) == 50
    np.testing.assert_allclose(obj.J[:5], [0.940456, 0.932993, 0.924405, 0.920497, 0.910304], atol=TOL)
    np.testing.assert_allclose(obj.F[:5], [0.966296, 0.979120, 0.937528, 0.968200, 0.933002], atol=TOL)


def test_blackswan_video_consistency(blackswan_pair):
    pred, gt = blackswan_pair
    vc8 = video_consistency(pred, gt, 8)
    vc16 = video_consistency(pred, gt, 16)
    assert (vc8.windows, vc16.windows) == (42, 34)
    assert vc8.nan_windows == vc16.nan_windows == 0
    assert vc8.value == pytest.approx(0.990011, abs=TOL)
    assert vc16.value == pytest.approx(0.988031, abs=TOL)


def test_blackswan_semi_style_after_reducing_to_id1(blackswan_pair):
    pred, gt = blackswan_pair
    r = evaluate_semi_supervised((pred == 1).astype(np.uint8), gt)
    assert r.frames_scored == 48
    assert r.J_mean == pytest.approx(0.926835, abs=TOL)
    assert r.J_recall == pytest.approx(1.0, abs=TOL)
    assert r.J_decay == pytest.approx(0.015632, abs=TOL)
    # the same figures by hand: drop frames 0 and 49, J per frame of id 1
    j = region_similarity(pred[1:-1] == 1, gt[1:-1] == 1)
    assert r.objects[0].J == pytest.approx(list(j), abs=1e-12)


def test_blackswan_relabelled_proposals_give_the_same_scores(blackswan_pair, blackswan_unsup):
    pred, gt = blackswan_pair
    perm = np.arange(21)
    rng = np.random.default_rng(0)
    perm[1:] = rng.permutation(np.arange(1, 21))
    r = evaluate_unsupervised(perm[pred], gt)
    assert r.objects[0].proposal_id == perm[1]
    assert r.jf_mean == pytest.approx(blackswan_unsup.jf_mean, abs=1e-12)
    assert r.objects[0].F == pytest.approx(blackswan_unsup.objects[0].F, abs=1e-12)
    vc = video_consistency(perm[pred], gt, 8)
    assert vc.value == pytest.approx(0.990011, abs=TOL)


@pytest.mark.parametrize("shift, j, f", [(4, 0.923077, 1.0), (10, 0.818182, 0.535)])
def test_shifted_square(shift, j, f):
    g, p = _square(), _square(shift)
    assert region_similarity(p, g)[0] == pytest.approx(j, abs=TOL)
    assert boundary_measure(p, g)[0] == pytest.approx(f, abs=TOL)


def test_empty_cases():
    z, g = np.zeros((480, 854), np.uint8), _square()
    assert region_similarity(z, z)[0] == 1.0
    assert boundary_measure(z, z)[0] == 1.0          # no boundary anywhere: P = R = 1
    assert boundary_measure(z, g)[0] == 0.0          # no predicted boundary: P = 1, R = 0
    assert boundary_measure(g, z)[0] == 0.0          # no GT boundary: P = 0, R = 1
    assert region_similarity(z, g)[0] == 0.0
    # P + R = 0: boundaries far apart
    far = np.zeros_like(g)
    far[400:450, 700:750] = 1
    assert boundary_measure(far, g)[0] == 0.0


# ------------------------------------------------------------ F building blocks
def test_boundary_map_hand_examples():
    seg = np.zeros((4, 4), np.uint8)
    seg[1:3, 1:3] = 1
    expected = np.array([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(boundary_map(seg), expected)
    assert not boundary_map(np.ones((3, 3))).any()   # last row/column rules: a full mask has no boundary
    right = np.zeros((3, 3))
    right[:, 2] = 1
    np.testing.assert_array_equal(boundary_map(right), np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], bool))
    assert seg.sum() == 4  # input untouched


def test_tolerance_and_disk():
    assert boundary_tolerance((480, 854)) == 8           # ceil(0.008 * 979.6)
    assert boundary_tolerance((480, 854), 3) == 3         # >= 1 means pixels
    d = jf.disk(8)
    assert d.shape == (17, 17) and int(d.sum()) == 197    # lattice points with x^2 + y^2 <= 64
    assert (d == d.T).all() and (d == d[::-1]).all()


def _naive_f(p, g, void, bound_th):
    """F on full frames, written straight from the definition (scipy dilation)."""
    from scipy import ndimage

    r = boundary_tolerance(g.shape, bound_th)
    if void is not None:
        p, g = p & ~void, g & ~void
    bp, bg = boundary_map(p), boundary_map(g)
    k = jf.disk(r).astype(bool)
    dp = ndimage.binary_dilation(bp, structure=k)
    dg = ndimage.binary_dilation(bg, structure=k)
    n_fg, n_gt = bp.sum(), bg.sum()
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0:
        prec, rec = 1.0, 0.0
    elif n_gt == 0:
        prec, rec = 0.0, 1.0
    else:
        prec, rec = (bp & dg).sum() / n_fg, (bg & dp).sum() / n_gt
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def _blobs(rng, h, w, n):
    m = np.zeros((h, w), bool)
    for _ in range(n):
        y, x = rng.integers(-5, h), rng.integers(-5, w)
        m[max(y, 0):y + rng.integers(1, 25), max(x, 0):x + rng.integers(1, 25)] ^= True
    return m


@pytest.mark.parametrize("seed", range(6))
def test_cropped_f_equals_full_frame_definition(seed):
    """The bounding-box crops must not change F, including masks touching the image border and void."""
    rng = np.random.default_rng(seed)
    h, w = 60 + seed * 7, 90 - seed * 5
    bound_th = [0.008, 0.05, 3, 1, 0.1, 6][seed]
    p, g = _blobs(rng, h, w, 6), _blobs(rng, h, w, 6)
    void = _blobs(rng, h, w, 2) if seed % 2 else None
    got = boundary_measure(p, g, void, bound_th)[0]
    assert got == pytest.approx(_naive_f(p, g, void, bound_th), abs=1e-12)


def test_cv2_and_scipy_dilation_agree():
    rng = np.random.default_rng(1)
    b = rng.random((40, 50)) > 0.97
    b[0, 0] = b[-1, -1] = True
    k = jf.disk(5)
    np.testing.assert_array_equal(jf.dilate(b, 5), jf._dilate_scipy(b, k))


# ------------------------------------------------------------------ statistics
def test_decay_bins():
    assert decay_bins(50) == [(0, 13), (12, 26), (25, 38), (37, 50)]   # shared edge frames
    assert decay_bins(48) == [(0, 13), (12, 25), (24, 36), (35, 48)]   # ids [0, 12, 24, 35, 47]


def test_davis_statistics_hand_values():
    x = np.linspace(1.0, 0.0, 50)
    m, r, d = davis_statistics(x)
    assert m == pytest.approx(0.5)
    assert r == pytest.approx(np.mean(x > 0.5))
    assert d == pytest.approx(x[0:13].mean() - x[37:50].mean())
    m, r, d = davis_statistics([0.9, np.nan, 0.2, 0.8])
    assert m == pytest.approx((0.9 + 0.2 + 0.8) / 3)
    assert r == pytest.approx(0.5)  # NaN counts as a miss, as in the official code
    with pytest.raises(InputError):
        davis_statistics([])


# ------------------------------------------------------------------ protocols
def _two_objects(t=6, h=40, w=60):
    gt = np.zeros((t, h, w), np.uint8)
    gt[:, 5:15, 5:20] = 1
    gt[:, 20:35, 30:55] = 2
    return gt


def test_unsupervised_hungarian_matching_swapped_ids():
    gt = _two_objects()
    pred = np.zeros_like(gt)
    pred[gt == 1] = 7
    pred[gt == 2] = 3
    pred[:, 0:2, 0:2] = 5  # a spurious proposal
    r = evaluate_unsupervised(pred, gt)
    assert [o.proposal_id for o in r.objects] == [7, 3]
    assert r.jf_mean == 1.0 and r.J_decay == 0.0


def test_unsupervised_void_is_excluded_semi_counts_it_as_background():
    gt = _two_objects()[:, :, :]
    gt[:, 36:40, :] = 255
    pred = np.where(gt == 255, 0, gt)
    pred[:, 36:40, :] = 1  # prediction covers the void band
    assert evaluate_unsupervised(pred, gt).J_mean == 1.0
    semi = evaluate_semi_supervised(pred, gt)
    assert semi.objects[0].J_mean < 1.0 and semi.objects[1].J_mean == 1.0


def test_unsupervised_pads_missing_proposals_and_caps_their_number():
    gt = _two_objects()
    pred = (gt == 2).astype(np.uint8)  # one proposal for two objects
    r = evaluate_unsupervised(pred, gt)
    assert sorted(o.J_mean for o in r.objects) == [0.0, 1.0]
    many = gt.copy()
    many[:, 0, 0] = 21
    with pytest.raises(InputError, match="20 proposals"):
        evaluate_unsupervised(many, gt)
    assert evaluate_unsupervised(many, gt, max_proposals=21).J_mean > 0.9


def test_semi_skips_first_and_last_frames_and_rejects_extra_ids():
    gt = _two_objects()
    pred = gt.copy()
    pred[0] = 0
    pred[-1] = 1
    r = evaluate_semi_supervised(pred, gt)
    assert r.frames_scored == 4 and r.jf_mean == 1.0
    missing = np.where(gt == 2, 0, gt)  # object 2 never predicted: zero-padded
    assert [o.J_mean for o in evaluate_semi_supervised(missing, gt).objects] == [1.0, 0.0]
    extra = gt.copy()
    extra[2, 0, 0] = 3
    with pytest.raises(InputError, match="only 2 object"):
        evaluate_semi_supervised(extra, gt)
    with pytest.raises(InputError, match="at least 3 frames"):
        evaluate_semi_supervised(gt[:2], gt[:2])
    with pytest.raises(InputError, match="no object"):
        evaluate_semi_supervised(gt, np.zeros_like(gt))


# ------------------------------------------------------------ VC (docs/design/metrics.md#vspw-video-consistency-mvc_8-mvc_16)
def _vc_reference(pred, gt, n):
    """VC windows written straight from the definition (AND over j = 1..n-1, range(T - n))."""
    t = gt.shape[0]
    out = []
    if t <= n:
        return out
    for i in range(t - n):
        g = np.ones(gt.shape[1:], bool)
        p = np.ones(gt.shape[1:], bool)
        for j in range(1, n):
            g &= gt[i] == gt[i + j]
            p &= pred[i] == pred[i + j]
        out.append((g & p).sum() / g.sum() if g.sum() else math.nan)
    return out


def _random_video(rng, t, h=12, w=16, k=3, p_change=0.1):
    v = np.empty((t, h, w), np.int64)
    v[0] = rng.integers(0, k, (h, w))
    for i in range(1, t):
        flip = rng.random((h, w)) < p_change
        v[i] = np.where(flip, rng.integers(0, k, (h, w)), v[i - 1])
    return v


@pytest.mark.parametrize("n", [2, 3, 8, 16])
def test_vc_matches_definition_pooled_over_videos(n):
    rng = np.random.default_rng(n)
    videos = [(_random_video(rng, t), _random_video(rng, t)) for t in (30, n, n + 1, 23)]
    acc = VideoConsistency(n)
    ref = []
    for pred, gt in videos:
        acc.add_video(pred, gt)
        ref += _vc_reference(pred, gt, n)
    r = acc.compute()
    assert r.windows == len(ref) and r.videos == 4 and r.skipped_videos == 1
    np.testing.assert_allclose(np.array(r.window_values, float), np.array(ref, float), atol=1e-12)
    assert r.value == pytest.approx(np.nanmean(ref), abs=1e-12)


def test_vc_window_counts_and_short_videos():
    z = np.zeros((50, 4, 4), np.uint8)
    assert video_consistency(z, z, 8).windows == 42
    assert video_consistency(z, z, 16).windows == 34
    short = video_consistency(z[:8], z[:8], 8)
    assert (short.windows, short.skipped_videos, short.value) == (0, 1, None)
    assert video_consistency(z[:9], z[:9], 8).windows == 1


def test_vc_label_permutation_invariance_constant_prediction_and_merges():
    rng = np.random.default_rng(3)
    gt, pred = _random_video(rng, 30, k=4), _random_video(rng, 30, k=5)
    base = video_consistency(pred, gt, 8).value
    perm = rng.permutation(5)
    assert video_consistency(perm[pred], gt, 8).value == pytest.approx(base, abs=1e-15)
    assert video_consistency(np.full_like(pred, 7), gt, 8).value == 1.0
    merged = np.where(pred == 4, 3, pred)  # two clusters mapped onto one label can only raise VC
    assert video_consistency(merged, gt, 8).value >= base


def test_vc_nan_windows_are_dropped():
    t, n = 20, 8
    gt = np.zeros((t, 5, 5), np.uint8)
    gt[1:10:2] = 1                       # the whole GT flips every frame up to frame 10
    pred = _random_video(np.random.default_rng(0), t, 5, 5)
    r = video_consistency(pred, gt, n)
    ref = _vc_reference(pred, gt, n)
    assert r.windows == 12 and r.nan_windows == sum(math.isnan(x) for x in ref) > 0
    assert r.value == pytest.approx(np.nanmean(ref), abs=1e-12)
    flip = np.zeros((12, 3, 3), np.uint8)
    flip[::2] = 1
    allnan = video_consistency(flip, flip, 4)
    assert allnan.value is None and allnan.nan_windows == allnan.windows == 8


def test_vc_bad_inputs():
    z = np.zeros((10, 4, 4), np.uint8)
    with pytest.raises(InputError):
        VideoConsistency(1)
    with pytest.raises(InputError):
        video_consistency(z, z[:9], 4)
    with pytest.raises(InputError):
        video_consistency(z, np.zeros((10, 4, 5), np.uint8), 4)


# ------------------------------------------------------------ mIoU (docs/design/metrics.md#vspw-miou)
def test_miou_official_nanmean_and_gt_only_variant():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 2, 1, 1]])
    r = mean_iou(pred, gt, num_classes=4)
    # IoU: class 0 = 1/2, class 1 = 1, class 2 = 0 (predicted, absent from GT: counts), class 3 absent: dropped
    assert r.class_iou == [0.5, 1.0, 0.0, None]
    assert r.miou == pytest.approx(0.5)
    assert r.miou_gt_classes == pytest.approx(0.75)
    assert mean_iou(pred, gt, 4, class_average="gt_only").miou == pytest.approx(0.75)
    assert r.pixel_acc == pytest.approx(0.75)
    assert r.mean_class_acc == pytest.approx(0.75)       # nanmean(0.5, 1)
    assert r.fwiou == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)


def test_miou_out_of_range_predictions_are_wrong_never_crash():
    gt = np.array([[123, 123, 5, 5, 255]])
    pred = np.array([[255, 123, 200, -1, 7]])
    cm = ConfusionMatrix(124)
    cm.update(pred, gt)                       # gt = 123 with pred 255 must not overflow
    r = cm.compute()
    assert r.out_of_range_pred_pixels == 3
    assert r.scored_pixels == 4 and r.ignored_pixels == 1
    assert r.class_iou[123] == pytest.approx(0.5)   # 1 hit / (2 GT + 1 pred - 1)
    assert r.class_iou[5] == 0.0
    assert r.class_iou[7] is None              # pred 7 only on an ignored pixel
    assert r.class_iou[200 % 124] is None      # 200 is not silently filed as another class
    assert r.pixel_acc == pytest.approx(0.25)


def test_miou_vspw_remap_and_strict_gt():
    raw = np.array([[0, 1, 124, 255, 2]])
    np.testing.assert_array_equal(vspw_remap(raw), [[255, 0, 123, 255, 1]])
    assert raw.tolist() == [[0, 1, 124, 255, 2]]  # caller's array untouched
    pred = np.array([[9, 0, 123, 3, 1]])
    r = mean_iou(pred, raw, 124, vspw_remap=True)
    assert r.scored_pixels == 3 and r.miou == 1.0
    r2 = mean_iou(raw, raw, 124, vspw_remap=True, remap_pred=True)
    assert r2.miou == 1.0 and r2.out_of_range_pred_pixels == 0
    with pytest.raises(InputError, match="vspw-remap"):
        mean_iou(pred, raw, 124)               # raw id 124 is not a class without the remap
    lax = mean_iou(pred, raw, 124, strict_gt=False)
    assert lax.scored_pixels == 3 and lax.ignored_pixels == 2


def test_miou_is_one_global_matrix_not_a_mean_of_videos():
    a_gt, a_pr = np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), int)
    b_gt = np.array([[[1, 1], [1, 1]]])
    b_pr = np.array([[[1, 0], [0, 0]]])
    cm = ConfusionMatrix(2)
    cm.update(a_pr, a_gt)
    cm.update(b_pr, b_gt)
    r = cm.compute()
    stacked = mean_iou(np.concatenate([a_pr, b_pr]), np.concatenate([a_gt, b_gt]), 2)
    assert r.miou == stacked.miou == pytest.approx((4 / 7 + 1 / 4) / 2)
    per_video = (mean_iou(a_pr, a_gt, 2).miou + mean_iou(b_pr, b_gt, 2).miou) / 2
    assert per_video != pytest.approx(r.miou)
    assert r.frames == 2


def test_miou_input_validation():
    g = np.zeros((2, 2), int)
    with pytest.raises(InputError):
        mean_iou(np.zeros((2, 3), int), g, 2)
    with pytest.raises(InputError, match="non-integer"):
        mean_iou(np.full((2, 2), 0.5), g, 2)
    assert mean_iou(np.zeros((2, 2), np.float32), g, 2).miou == 1.0
    with pytest.raises(InputError):
        ConfusionMatrix(0)
    with pytest.raises(InputError):
        ConfusionMatrix(300)  # ignore index 255 would be a class
    empty = ConfusionMatrix(3).compute()
    assert empty.miou is None and empty.pixel_acc is None


# ------------------------------------------------------------ evaluate_arrays
def test_evaluate_arrays_on_blackswan(blackswan_pair):
    pred, gt = blackswan_pair
    out = evaluate_arrays(pred, gt, metrics="vc8,jf", protocol="unsupervised", per_frame=True)
    assert set(out) >= {"vc8", "jf"} and "miou" not in out
    assert out["jf"]["J&F-Mean"] == pytest.approx(0.940131, abs=TOL)
    assert len(out["jf"]["objects"][0]["J"]) == 50
    assert out["vc8"]["value"] == pytest.approx(0.990011, abs=TOL)
    assert len(out["vc8"]["window_values"]) == 42


def test_evaluate_arrays_options():
    gt = _two_objects(t=10)
    pred = gt.copy()
    out = evaluate_arrays(pred, gt)
    assert out["miou"]["miou"] == 1.0 and out["miou"]["num_classes"] == 3 and out["miou"]["num_classes_inferred"]
    assert out["vc8"]["value"] == 1.0 and out["vc16"]["value"] is None
    assert out["jf"]["protocol"] == "semi" and out["jf"]["J&F-Mean"] == 1.0
    assert evaluate_arrays(pred, gt, metrics=["miou"], num_classes=5)["miou"]["miou"] == 1.0
    for bad in ({"metrics": "miou,acc"}, {"protocol": "weakly"}, {"metrics": ""}):
        with pytest.raises(InputError):
            evaluate_arrays(pred, gt, **bad)
    with pytest.raises(InputError):
        evaluate_arrays(pred[:9], gt)


def test_inputs_are_never_modified():
    gt = _two_objects(t=10)
    gt[:, 0, :] = 255
    pred = np.where(gt == 255, 0, gt)
    pred[:, 1, :] = 2
    gt0, pred0 = gt.copy(), pred.copy()
    for protocol in ("semi", "unsupervised"):
        evaluate_arrays(pred, gt, protocol=protocol, num_classes=10)
    mean_iou(pred, gt, 10, vspw_remap=True, remap_pred=True)
    np.testing.assert_array_equal(gt, gt0)
    np.testing.assert_array_equal(pred, pred0)
