"""Label assignment (docs/design/authors_code.md#label-assignment-and-the-scene-context-model): reference vote, void handling, numbering, LabelTable."""
import warnings

import numpy as np
import pytest
import torch

from vidseg_core.errors import InputError
from vidseg_core.labels import (LabelTable, assign_labels, palette_color, prepare_reference,
                                resize_nearest)


def test_palette_is_voc_davis():
    assert palette_color(0) == (0, 0, 0)
    assert palette_color(1) == (128, 0, 0)  # DAVIS object 1: dark red
    assert palette_color(2) == (0, 128, 0)
    assert palette_color(3) == (128, 128, 0)
    assert palette_color(255) == (224, 224, 192)  # VOC void colour
    assert len({palette_color(v) for v in range(256)}) == 256
    with pytest.raises(InputError):
        palette_color(-1)


@pytest.mark.parametrize("src,dst", [((480, 854), (28, 52)), ((17, 23), (5, 9)), ((6, 6), (13, 11))])
def test_resize_nearest_matches_pil(src, dst):
    from PIL import Image

    rng = np.random.default_rng(0)
    m = rng.integers(0, 200, size=src).astype(np.uint8)
    pil = np.asarray(Image.fromarray(m).resize((dst[1], dst[0]), Image.NEAREST))
    assert np.array_equal(resize_nearest(m, dst), pil)


def test_resize_nearest_matches_pil_random_sizes():
    from PIL import Image

    rng = np.random.default_rng(1)
    for _ in range(60):
        H, W, h, w = (int(v) for v in rng.integers(1, 700, size=4))
        m = np.arange(H * W, dtype=np.int32).reshape(H, W)  # every pixel distinct
        pil = np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST))
        assert np.array_equal(resize_nearest(m, (h, w)), pil), (H, W, h, w)


def test_resize_blackswan_first_frame(blackswan_masks):
    g = resize_nearest(blackswan_masks[0], (28, 52))
    assert g.shape == (28, 52) and set(np.unique(g)) == {0, 1}
    assert 0.05 < g.mean() < 0.2  # the swan is ~10 % of the frame


def test_majority_vote_with_smallest_label_on_ties():
    clusters = np.array([[0, 0, 0, 0], [1, 1, 2, 2], [3, 3, 3, 3]])
    ref = np.array([[5, 5, 5, 7], [7, 4, 9, 9], [255, 255, 255, 2]])
    a = assign_labels(clusters, 5, ref)
    assert a.mapping == {0: 5, 1: 4, 2: 9, 3: 2}  # cluster 1: 7 vs 4 tie -> 4; cluster 3: void ignored -> 2
    assert a.unassigned_clusters == [4]  # cluster 4 is absent from the reference frame
    assert a.lost_labels == [7]  # 7 is in the reference but wins no cluster
    assert a.kind == "label"


def test_void_cluster_unassigned_unless_asked():
    clusters = np.array([[0, 0], [1, 1]])
    ref = np.array([[255, 255], [3, 3]])
    a = assign_labels(clusters, 2, ref)
    assert a.mapping == {1: 3} and a.unassigned_clusters == [0]
    b = assign_labels(clusters, 2, ref, assign_void=True)
    assert b.mapping == {0: 255, 1: 3}
    c = assign_labels(clusters, 2, np.array([[0, 0], [3, 3]]), void_values=(0, 255))
    assert c.mapping == {1: 3}


def test_labels_only_from_reference():
    rng = np.random.default_rng(1)
    for _ in range(20):
        clusters = rng.integers(0, 6, size=(5, 7))
        ref = rng.choice([2, 11, 255], size=(5, 7))
        if (ref == 255).all():
            continue
        a = assign_labels(clusters, 6, ref)
        assert set(a.mapping.values()) <= {2, 11}
        assert sorted(set(a.mapping) | set(a.unassigned_clusters)) == list(range(6))


def test_without_reference_clusters_numbered_by_first_appearance():
    clusters = torch.tensor([[7, 7, 2], [5, 2, 9]])
    a = assign_labels(clusters, 10, None)
    assert a.mapping == {7: 0, 2: 1, 5: 2, 9: 3}
    assert a.unassigned_clusters == [0, 1, 3, 4, 6, 8]
    assert a.kind == "cluster"


def test_prepare_reference_sizes_and_warning():
    grid = (4, 6)
    frame = (8, 12)
    m = np.zeros(frame, dtype=np.uint8)
    m[:4, :6] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = prepare_reference(m, grid, frame)  # frame-size mask: no warning
        r2 = prepare_reference(r, grid, frame)  # grid-size mask: used as is, no warning
    assert r.shape == grid and r.dtype == np.int64 and np.array_equal(r, r2)
    assert r[:2, :3].min() == 1 and r[2:].max() == 0
    odd = np.zeros((16, 30), dtype=np.int64)
    odd[:, :15] = 2
    with pytest.warns(UserWarning, match="resizing it"):
        r3 = prepare_reference(odd, grid, frame)
    assert np.array_equal(r3[:, :3], np.full((4, 3), 2)) and r3[:, 3:].max() == 0
    assert prepare_reference(torch.ones(8, 12, dtype=torch.long), grid, frame).shape == grid
    assert prepare_reference(np.ones((8, 12, 1)), grid, frame).shape == grid


def test_prepare_reference_bad_input():
    grid = (4, 6)
    with pytest.raises(InputError, match="no labels"):
        prepare_reference(np.full((8, 12), 255), grid)
    assert prepare_reference(np.full((8, 12), 255), grid, assign_void=True).max() == 255
    with pytest.raises(InputError, match="RGB"):
        prepare_reference(np.zeros((8, 12, 3)), grid)
    with pytest.raises(InputError, match="integer"):
        prepare_reference(np.full((8, 12), 0.5), grid)
    with pytest.raises(InputError, match="negative"):
        prepare_reference(np.full((8, 12), -1), grid)
    with pytest.raises(InputError, match="empty"):
        prepare_reference(np.zeros((0, 12)), grid)
    assert prepare_reference(np.ones((8, 12), dtype=np.float32), grid).dtype == np.int64


def test_label_table():
    t = LabelTable.from_values([255, 0, 1, 1], names={1: "swan"})
    assert t.values == [0, 1, 255] and [e.index for e in t] == [0, 1, 2]
    assert t.name_of(1) == "swan" and t.name_of(0) == "label 0"
    assert t.color_of(1) == (128, 0, 0)
    img = t.colorize(torch.tensor([[0, 1], [255, 42]]))
    assert img.dtype == torch.uint8 and img.shape == (2, 2, 3)
    assert img[0, 1].tolist() == [128, 0, 0] and img[1, 1].tolist() == [0, 0, 0]  # unknown value: black
    assert LabelTable.from_dict(t.to_dict()) == t
    with pytest.raises(InputError, match="not in this label table"):
        t.entry(3)
    c = LabelTable.from_values([0, 1], kind="cluster")
    assert c.name_of(1) == "cluster 1" and c.kind == "cluster"


def test_a_region_smaller_than_a_grid_cell_is_reported_lost(tmp_path, capsys):
    """Object 2 (3x3 px, between cell centres) vanishes when the mask is brought to the grid: warned, in
    summary.json's lost_labels and lost_at_grid (before, it was silently absent from both)."""
    import json

    from PIL import Image

    from vidseg_core.__main__ import main
    from vidseg_core.context_model import SceneContext

    ref = np.zeros((64, 128), dtype=np.uint8)  # tiny-sd at 64x128: a 4x8 grid of 16 px cells, centres at 8 + 16k
    ref[:, 64:] = 1
    ref[1:4, 1:4] = 2
    # the scene context alone (no model): at the grid label 2 is gone, 0 and 1 are not
    feats = torch.randn(1, 4, 8, 6, generator=torch.Generator().manual_seed(0))
    ctx = SceneContext(refiner="none")
    ctx.init(feats, ref, 0, num_clusters=2, n_init=1)
    assert ctx.assignment.lost_at_grid == [2] and 2 in ctx.assignment.lost_labels
    # the whole command
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(d / f"f{i}.png")
    Image.fromarray(ref, mode="L").save(tmp_path / "ref.png")  # grey levels = ids
    out = tmp_path / "out"
    assert main(["segment", str(d), "--model", "tiny-sd", "--out", str(out), "--mode", "fast", "--clusters", "3",
                 "--reference-mask", str(tmp_path / "ref.png"), "--quiet", "--no-overlay"]) == 0
    assert "label(s) 2 are smaller than one feature-grid cell (8x4 cells for 128x64 px" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lost_at_grid"] == [2] and 2 in summary["lost_labels"]


def test_a_region_lost_when_max_side_shrinks_the_mask_is_reported(tmp_path, capsys):
    """Object 3 (one pixel the nearest downscale skips) vanishes when --max-side halves the mask: warned at
    once, in summary.json's lost_at_max_side and lost_labels (before, it was silently absent from both)."""
    import json

    from PIL import Image

    from vidseg_core.__main__ import main
    from vidseg_core.labels import resize_nearest

    H, W = 128, 256
    index = np.arange(H * W, dtype=np.int64).reshape(H, W)
    kept = set(np.asarray(resize_nearest(index, (H // 2, W // 2))).ravel().tolist())
    y, x = divmod(next(i for i in range(W + 1, H * W) if i not in kept), W)  # a pixel the downscale skips
    ref = np.zeros((H, W), dtype=np.uint8)
    ref[:, W // 2:] = 1
    ref[y, x] = 3
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(d / f"f{i}.png")
    Image.fromarray(ref, mode="L").save(tmp_path / "ref.png")
    out = tmp_path / "out"
    assert main(["segment", str(d), "--model", "tiny-sd", "--out", str(out), "--mode", "fast", "--clusters", "3",
                 "--max-side", str(W // 2), "--reference-mask", str(tmp_path / "ref.png"), "--quiet",
                 "--no-overlay"]) == 0
    err = capsys.readouterr().err
    assert "reference label(s) 3 vanish when the mask is scaled to the working size 128x64 (--max-side)" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lost_at_max_side"] == [3] and 3 in summary["lost_labels"]
    assert 1 not in summary["lost_labels"]
