"""Difference maps -> labels (docs/design/authors_code.md#difference-maps-to-labels-as-published): torch pipeline vs cv2 / Pillow / numpy."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from vidseg_core.modulation import labels_from_difference_maps
from vidseg_core.modulation.difference import (LabelArgmax, difference_map, filter_maps, gaussian_blur,
                                               gaussian_kernel1d, normalise_maps, reflect101_indices, resize_bilinear,
                                               rgb_distance, rgb_distance_wrapped)
from vidseg_core.modulation.masks import lanczos_upsample_mask, resize_nearest


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("shape", [(77, 131), (480, 854), (1, 5), (2, 3), (3, 3), (5, 1)])
def test_gaussian_blur_matches_cv2(shape):
    d = (_rng().random(shape) * 30).astype(np.float32)
    ref = cv2.GaussianBlur(d, (5, 5), 3)
    ours = gaussian_blur(torch.from_numpy(d), 5, 3.0).numpy()
    assert np.abs(ours - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_gaussian_blur_batched_and_other_kernels():
    d = (_rng(1).random((2, 3, 19, 23)) * 5).astype(np.float32)
    ours = gaussian_blur(torch.from_numpy(d), 7, 1.5).numpy()
    for i in range(2):
        for j in range(3):
            ref = cv2.GaussianBlur(d[i, j], (7, 7), 1.5)
            assert np.abs(ours[i, j] - ref).max() < 1e-5
    assert torch.equal(gaussian_blur(torch.from_numpy(d), 0, 3.0), torch.from_numpy(d))  # off
    k = gaussian_kernel1d(5, 3.0).numpy()
    assert np.allclose(k, cv2.getGaussianKernel(5, 3).ravel(), atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_reflect101_matches_cv2_border_interpolate(n):
    pad = 5
    ours = reflect101_indices(n, pad).tolist()
    ref = [cv2.borderInterpolate(p, n, cv2.BORDER_REFLECT_101) for p in range(-pad, n + pad)]
    assert ours == ref


@pytest.mark.parametrize("src,dst", [((64, 128), (77, 131)), ((448, 832), (480, 854)), ((128, 192), (64, 96)),
                                     ((64, 64), (37, 53))])
def test_bilinear_resize_matches_cv2(src, dst):
    im = (_rng(2).random((3,) + src) * 255).astype(np.float32)
    ref = cv2.resize(im.transpose(1, 2, 0), (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    ours = resize_bilinear(torch.from_numpy(im), dst).numpy()
    # cv2 computes its coordinates slightly differently: within 1e-4 of the 0..255 range
    assert np.abs(ours - ref).max() < 255 * 1e-4


def test_wrap_around_example_from_reference():
    a = torch.tensor([10, 200, 0], dtype=torch.uint8).view(3, 1, 1)
    b = torch.tensor([12, 100, 0], dtype=torch.uint8).view(3, 1, 1)
    assert rgb_distance_wrapped(a, b).item() == pytest.approx(4.4721, abs=1e-4)
    assert rgb_distance(a, b).item() == pytest.approx(100.02, abs=1e-2)


def test_wrap_around_equals_numpy_uint8_arithmetic():
    rng = _rng(3)
    a = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    ref = np.sqrt(np.sum((a - b) ** 2, axis=2))  # the authors' expression on uint8 arrays
    ours = rgb_distance_wrapped(torch.from_numpy(a).permute(2, 0, 1), torch.from_numpy(b).permute(2, 0, 1))
    assert np.allclose(ours.numpy(), ref, atol=1e-5)
    assert ours.max() <= np.sqrt(765) + 1e-5


@pytest.mark.parametrize("lo,hi", [((28, 52), (480, 854)), ((4, 8), (77, 131)), ((7, 13), (479, 853)),
                                   ((2, 2), (5, 9)), ((5, 5), (5, 9)), ((8, 12), (128, 192))])
def test_lanczos_mask_is_bit_exact_pillow(lo, hi):
    m = (torch.from_numpy(_rng(4).random((2,) + lo)) > 0.5).float()
    ours = lanczos_upsample_mask(m, hi)
    for t in range(2):
        img = Image.fromarray((m[t].numpy() * 255).astype(np.uint8))
        ref = np.asarray(img.resize((hi[1], hi[0]), Image.LANCZOS)).astype(np.float32) / 255.0
        assert np.array_equal(ours[t].numpy(), ref)


def test_nearest_mask_upsampling_is_block_repeat():
    m = (torch.rand(3, 4, 8) > 0.5).float()
    up = resize_nearest(m, (8, 16))
    assert torch.equal(up, m.repeat_interleave(2, 1).repeat_interleave(2, 2))


def test_label_argmax_ties_go_to_lowest_label_like_numpy():
    rng = _rng(5)
    scores = rng.integers(0, 3, (4, 2, 6, 7)).astype(np.float32)  # many ties
    acc = LabelArgmax((2, 6, 7))
    for l in range(4):
        acc.update(l, torch.from_numpy(scores[l]))
    ids = torch.tensor([3, 5, 8, 9])
    assert torch.equal(acc.labels(ids), ids[torch.from_numpy(np.argmax(scores, axis=0))])
    with pytest.raises(RuntimeError):
        acc.update(7, torch.zeros(2, 6, 7))


def test_difference_map_pipeline_matches_cv2_numpy():
    rng = _rng(6)
    plus = torch.from_numpy(rng.random((2, 3, 64, 128)).astype(np.float32))
    minus = torch.from_numpy(rng.random((2, 3, 64, 128)).astype(np.float32))
    ours = difference_map(plus, minus, (77, 131))
    for t in range(2):
        a = cv2.resize(np.ascontiguousarray(plus[t].numpy().transpose(1, 2, 0) * 255), (131, 77))
        b = cv2.resize(np.ascontiguousarray(minus[t].numpy().transpose(1, 2, 0) * 255), (131, 77))
        d = cv2.GaussianBlur(np.sqrt(((a - b) ** 2).sum(2)), (5, 5), 3)
        d = d / (d.max() + 1e-5)
        assert np.abs(ours[t].numpy() - d).max() < 1e-4
    assert difference_map(plus, plus, (77, 131)).abs().max() == 0


def test_compat_modes_follow_the_authors_uint8_path():
    rng = _rng(7)
    plus = torch.from_numpy(rng.random((1, 3, 16, 24)).astype(np.float32))
    minus = torch.from_numpy(rng.random((1, 3, 16, 24)).astype(np.float32))
    wrap = difference_map(plus, minus, (21, 29), compat="wrap")
    a = cv2.resize((plus[0].numpy().transpose(1, 2, 0) * 255).astype(np.uint8), (29, 21))
    b = cv2.resize((minus[0].numpy().transpose(1, 2, 0) * 255).astype(np.uint8), (29, 21))
    d = cv2.GaussianBlur(np.sqrt(np.sum((a - b) ** 2, axis=2)), (5, 5), 3)
    assert np.abs(wrap[0].numpy() - d / (d.max() + 1e-5)).max() < 1e-5
    jpeg = difference_map(plus, minus, (21, 29), compat="wrap+jpeg")
    buf = io.BytesIO()
    Image.fromarray(d).convert("L").save(buf, format="JPEG")
    buf.seek(0)
    dj = np.asarray(Image.open(buf), dtype=np.float32)
    assert np.abs(jpeg[0].numpy() - dj / (dj.max() + 1e-5)).max() < 1e-6
    with pytest.raises(ValueError):
        difference_map(plus, minus, (21, 29), compat="bogus")


def test_normalise_and_filter():
    d = torch.tensor([[[0.0, 2.0], [4.0, 1.0]]])
    n = normalise_maps(d)
    assert n.max().item() == pytest.approx(4 / (4 + 1e-5))
    m = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])
    f = filter_maps(n, m, 0.7)
    assert torch.allclose(f, n * m + 0.7 * n * (1 - m))
    assert torch.equal(filter_maps(n, m, 1.0), n)


def test_labels_from_difference_maps_reproduces_argmax_with_filter():
    coarse = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1]]])
    maps = torch.rand(3, 1, 16, 32)
    out = labels_from_difference_maps(maps, coarse, [0, 1, 2], (16, 32), filter_s=1.0)
    assert torch.equal(out, maps.argmax(0))
    out7 = labels_from_difference_maps(maps, coarse, [0, 1, 2], (16, 32), filter_s=0.7)
    assert set(out7.unique().tolist()) <= {0, 1, 2}


# ---------------------------------------------------------------- the authors' ties (compat)
def _tied_case(seed=0, L=5, H=48, W=64, cell=8):
    """Decode pairs whose wrapped differences are piecewise constant from a few levels (7, 14, 15, ...):
    after the blur, the 8-bit truncation and the JPEG, many pixels tie exactly across labels."""
    rng = _rng(seed)
    vectors = np.array([(0, 0, 0), (0, 0, 7), (0, 14, 0), (7, 0, 0), (15, 0, 0), (0, 27, 0), (3, 4, 0),
                        (100, 0, 0)], dtype=np.uint8)
    base = rng.integers(0, 256, (L, H, W, 3), dtype=np.uint8)
    pick = rng.integers(0, len(vectors), (L, H // cell, W // cell))
    diff = vectors[pick].repeat(cell, 1).repeat(cell, 2)
    plus, minus = base, base - diff  # uint8: wraps
    coarse = torch.from_numpy(rng.integers(0, L, (1, H // cell, W // cell))).long()
    return plus, minus, coarse


def _authors_labels(plus, minus, coarse, ids, s):
    """The authors' steps, written from their description: numpy uint8 difference, float64 cv2 blur, 8-bit
    JPEG round trip, per-map max normalisation, the filter only for s < 1 (mask LANCZOS-upsampled / 255.0),
    numpy argmax (first maximum)."""
    L, H, W, _ = plus.shape
    maps = []
    for l in range(L):
        d = np.sqrt(np.sum((plus[l] - minus[l]) ** 2, axis=2))
        d = cv2.GaussianBlur(d, (5, 5), 3)
        buf = io.BytesIO()
        Image.fromarray(d).convert("L").save(buf, format="JPEG")
        buf.seek(0)
        d = np.array(Image.open(buf))
        d = d / (np.max(d) + 1e-5)
        if s != 1.0:
            mask = ((coarse[0].numpy() == ids[l]) * 255).astype(np.uint8)
            m = np.array(Image.fromarray(mask).resize((W, H), Image.LANCZOS)) / 255.0
            d = d * m + s * d * (1 - m)
        maps.append(d)
    maps = np.array(maps)
    ties = int(((maps == maps.max(0, keepdims=True)).sum(0) > 1).sum())
    return np.asarray(ids)[np.argmax(maps, axis=0)], ties


def _ours_labels(plus, minus, coarse, ids, s, compat="wrap+jpeg"):
    to01 = lambda u8: torch.from_numpy((u8.astype(np.float32) + 0.5) / 255).permute(0, 3, 1, 2)  # noqa: E731
    H, W = plus.shape[1:3]
    maps = torch.stack([difference_map(to01(plus[l:l + 1]), to01(minus[l:l + 1]), (H, W), compat=compat)
                        for l in range(plus.shape[0])])
    return labels_from_difference_maps(maps, coarse, ids, (H, W), filter_s=s, compat=compat)[0].numpy()


@pytest.mark.parametrize("s", [1.0, 0.7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compat_label_assignment_matches_the_authors_with_exact_ties(seed, s):
    plus, minus, coarse = _tied_case(seed)
    ids = [2, 3, 5, 8, 9]
    coarse = torch.tensor(ids)[coarse]
    want, ties = _authors_labels(plus, minus, coarse, ids, s)
    assert ties > (100 if s == 1.0 else 5)  # the case is about ties: every one goes to the lowest label
    assert np.array_equal(_ours_labels(plus, minus, coarse, ids, s), want)


def test_compat_blur_truncates_like_the_authors():
    """A constant map of 27 blurred in float32 is 26.999998 and Pillow's ``convert("L")`` truncates it to 26
    before the JPEG; the authors' float64 blur, stored as float32, stays 27 (compat modes blur as they do)."""
    from vidseg_core.modulation.difference import gaussian_blur_cv2

    ref = cv2.GaussianBlur(np.full((16, 16), 27.0), (5, 5), 3)
    assert (np.array(Image.fromarray(ref).convert("L")) == 27).all()
    ours = gaussian_blur_cv2(torch.full((1, 16, 16), 27.0, dtype=torch.float64))
    assert ours.dtype == torch.float64 and np.array_equal(ours[0].numpy(), ref)
    f32 = gaussian_blur(torch.full((1, 16, 16), 27.0))  # the float32 blur of compat "none"
    assert (np.array(Image.fromarray(f32[0].double().numpy()).convert("L")) == 26).all()
    # the wrapped distance in the authors' float64: (0, 0, 7) -> exactly 7
    a = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[:, 2] = 7
    d = rgb_distance_wrapped(a, b, torch.float64)
    assert d.dtype == torch.float64 and torch.equal(d, torch.full_like(d, 7.0))


def test_filter_is_skipped_at_s_one():
    """s = 1 returns the maps themselves: d·M + d·(1 − M) in float32 would move values by a rounding step."""
    d = torch.full((1, 4, 4), 0.1)
    m = torch.full((1, 4, 4), 100 / 255)
    assert not torch.equal(d * m + d * (1 - m), d)
    assert filter_maps(d, m, 1.0) is d
