"""The small core helpers the ComfyUI nodes rely on (added for them, tested here).

* :func:`vidseg_core.labels.label_ids_from_rgb` -- label images (palette / grey / black-and-white) -> ids;
* :meth:`vidseg_core.context_model.SceneContext.init_from_assignment` -- the stage nodes' split of ``init``;
* the ``cancel`` callback of :func:`vidseg_core.pipeline.segment_video`.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseg_core.context_model import SceneContext
from vidseg_core.errors import InputError
from vidseg_core.kmeans import fit_kmeans
from vidseg_core.labels import assign_labels, label_ids_from_rgb, palette_color, prepare_reference


def test_label_ids_from_palette_colours_with_compression_noise():
    ids = np.array([[0, 1, 2], [3, 15, 255]])
    rgb = np.array([[palette_color(v) for v in row] for row in ids], dtype=np.int64)
    assert np.array_equal(label_ids_from_rgb(rgb.astype(np.uint8)), ids)
    noisy = np.clip(rgb + np.array([6, -5, 4]), 0, 255).astype(np.uint8)
    assert np.array_equal(label_ids_from_rgb(noisy), ids)
    assert np.array_equal(label_ids_from_rgb(torch.from_numpy(rgb).float() / 255.0), ids)  # ComfyUI IMAGE


def test_label_ids_from_grey_and_black_and_white():
    grey = np.zeros((2, 3, 3), np.uint8)
    grey[0, 0] = 7
    grey[1, 2] = 255
    assert label_ids_from_rgb(grey).tolist() == [[7, 0, 0], [0, 0, 255]]  # grey levels are ids (255 = void)
    bw = np.zeros((2, 2, 3), np.uint8)
    bw[0, 1] = 255
    assert label_ids_from_rgb(bw).tolist() == [[0, 1], [0, 0]]  # a binary mask image: white is 1


def test_label_ids_from_rgb_refuses_non_label_colours_and_shapes():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (10, 200, 90)
    with pytest.raises(InputError, match="palette"):
        label_ids_from_rgb(rgb)
    with pytest.raises(InputError, match=r"\[H, W, 3\]"):
        label_ids_from_rgb(np.zeros((4, 4)))


def _features(seed=0, t=3, h=4, w=6, c=8):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(3, c, generator=g) * 3
    idx = torch.randint(0, 3, (t, h, w), generator=g)
    return base[idx] + 0.1 * torch.randn(t, h, w, c, generator=g)


def test_init_from_assignment_is_init_split_in_two():
    feats = _features()
    ref = np.zeros((4, 6), np.int64)
    ref[:, 3:] = 1
    whole = SceneContext(refiner="none")
    table = whole.init(feats, ref, 0, num_clusters=3, n_init=2, seed=1)
    split = SceneContext(refiner="none")
    km = fit_kmeans(feats.reshape(-1, 8), 3, n_init=2, seed=1)
    clusters = km.labels.reshape(3, 4, 6)[0]
    assignment = assign_labels(clusters, 3, prepare_reference(ref, (4, 6)))
    table2 = split.init_from_assignment(feats[0], clusters, assignment)
    assert table2.to_dict() == table.to_dict()
    nxt = _features(seed=1)
    assert torch.equal(whole.step(nxt, nxt), split.step(nxt, nxt))
    with pytest.raises(InputError, match="grid"):
        SceneContext().init_from_assignment(feats[0], clusters[:2], assignment)


def test_segment_video_cancel_stops_the_run():
    from vidseg_core.backbones import load_backbone
    from vidseg_core.modulation import ModulationCancelled
    from vidseg_core.pipeline import SegmentSettings, segment_video

    bb = load_backbone("tiny-sd", "cpu", "fp32")
    frames = torch.rand(2, 64, 64, 3)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) >= 2  # the second check (inside the upsampler) cancels

    with pytest.raises(ModulationCancelled):
        segment_video(bb, frames, SegmentSettings(num_clusters=2, mode="fast", n_init=1), cancel=cancel)
    assert len(calls) == 2  # (a cancel() that returns False lets the run finish: the one-box node's tests)
