"""CBR (paper Eqs 3-5 and the authors' variant, docs/design/authors_code.md#correspondence-based-refinement-cbr-as-published) against loop oracles and hand-computed examples."""
import numpy as np
import pytest
import torch

from tests.oracles.cbr_loop import cbr_compat_loop, cbr_loop, correspondence_loop
from vidseg_core.cbr import (cbr_refine, cbr_refine_compat, compat_start_index, compat_trajectories,
                             correspondence_maps)
from vidseg_core.errors import InputError


def _random_case(seed, T=None, h=None, w=None, C=8, n_labels=3):
    g = torch.Generator().manual_seed(seed)
    T = T or int(torch.randint(1, 6, (1,), generator=g))
    h = h or int(torch.randint(1, 6, (1,), generator=g))
    w = w or int(torch.randint(1, 7, (1,), generator=g))
    feats = torch.randn(T, h, w, C, generator=g)
    labels = torch.randint(0, n_labels, (T, h, w), generator=g) * 7 + 1  # values 1, 8, 15
    return labels, feats


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("radius_sq", [2, 1, 5, None])
def test_default_matches_loop_oracle(seed, radius_sq):
    labels, feats = _random_case(seed)
    got = cbr_refine(labels, feats, radius_sq=radius_sq, dtype=torch.float64)
    assert torch.equal(got, cbr_loop(labels, feats, radius_sq=radius_sq, dtype=torch.float64))


def test_default_matches_loop_oracle_float32_structured():
    from tests.oracles.cbr_inputs import structured_inputs

    labels, feats = structured_inputs(6, 7, 9, 32)
    assert torch.equal(cbr_refine(labels, feats), cbr_loop(labels, feats))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("radius_sq", [0, 1, 2, 8])
def test_window_and_matrix_search_agree(seed, radius_sq):
    _, feats = _random_case(seed, T=4)
    a = correspondence_maps(feats, radius_sq, "window", torch.float64)
    b = correspondence_maps(feats, radius_sq, "matrix", torch.float64)
    assert torch.equal(a, b)
    nxt = correspondence_loop(feats, radius_sq, torch.float64)
    assert a.reshape(a.shape[0], -1).tolist() == nxt


def test_search_radius_restricts_matches():
    # frame 1 repeats frame 0 shifted by 2 cells to the right: the true match is out of a radius^2 = 2 disc
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 10, 16, generator=g)
    f = torch.stack([base[:, 2:10], base[:, 0:8]])  # [2, 1, 8, 16]: frame 0 cell x = frame 1 cell x + 2
    glob = correspondence_maps(f, None)[0, 0]
    local = correspondence_maps(f, 2)[0, 0]
    assert glob[:6].tolist() == [2, 3, 4, 5, 6, 7]
    assert all(abs(int(q) - x) <= 1 for x, q in enumerate(local))


def test_default_hand_example_static_scene():
    # distinct feature per cell, identical in every frame -> every trajectory stays put (identity T^j)
    T, h, w = 3, 1, 3
    feats = torch.eye(w).reshape(1, h, w, w).repeat(T, 1, 1, 1)
    labels = torch.tensor([[[1, 1, 5]], [[2, 1, 5]], [[1, 1, 1]]])
    out = cbr_refine(labels, feats)
    # frame 0: cell 0 sees [1, 2, 1] -> 1; cell 2 sees [5, 5, 1] -> 5
    # frame 1: cell 0 sees [2, 1] -> tie, own label (first reached) 2; cell 2 sees [5, 1] -> 5
    # frame 2 (last) votes only for itself
    assert out.tolist() == [[[1, 1, 5]], [[2, 1, 5]], [[1, 1, 1]]]
    labels2 = torch.tensor([[[1, 1, 5]], [[1, 1, 1]], [[1, 1, 1]]])
    assert cbr_refine(labels2, feats).tolist() == [[[1, 1, 1]], [[1, 1, 1]], [[1, 1, 1]]]


def test_default_follows_motion():
    # a texture moving one cell right per frame; a one-frame label flicker on the moving object is removed
    g = torch.Generator().manual_seed(1)
    tex = torch.randn(1, 12, 32, generator=g)
    T = 4
    feats = torch.stack([tex[:, 4 - t:12 - t] for t in range(T)])  # frame t shows texture shifted by t
    obj = torch.zeros(T, 1, 8, dtype=torch.long)
    for t in range(T):
        obj[t, 0, 2 + t] = 3  # the object cell moves right with the texture
    noisy = obj.clone()
    noisy[1, 0, 3] = 0  # flicker in frame 1
    out = cbr_refine(noisy, feats)
    assert torch.equal(out[0], obj[0])
    assert int(out[0, 0, 2]) == 3  # frame 0's object cell votes [3, 0, 3, 3] -> 3


# ---------------------------------------------------------------- compat (docs/design/authors_code.md#correspondence-based-refinement-cbr-as-published)
def _compat_hand_case():
    I = torch.eye(4)
    f0 = I
    f1 = torch.stack([I[0], I[3], I[0], I[2]])
    f2 = I
    f3 = torch.tensor([[0, 0, 0, 1.0], [0.6, 0.8, 0, 0], [0, 0, 0.6, 0.8], [0, 0, 0.8, 0.6]])
    feats = torch.stack([f0, f1, f2, f3])[:, None]  # [T=4, h=1, w=4, C=4]
    labels = torch.tensor([[1, 2, 2, 3], [2, 2, 1, 3], [1, 2, 3, 3], [4, 2, 3, 3]])[:, None]
    return labels, feats


def test_compat_hand_computed_trajectories():
    """Derivation (1x4 grid, 4 frames, F0 = F2 = identity):

    hop 0->1: static.  hop 1->2 (weights 1/2, 1/2; F2 = F0 = I): p2 = argmax_q F1[p1]_q -> [0, 3, 0, 2].
    hop 2->3 (weights 2/3 map, 1/3 aux) from cell 0: q=0 -> 2/3*0 + 1/3*1 = 0.333, q=1 -> 2/3*0.6 = 0.4 -> 1
    (equal weights would pick q=0: 0.5 vs 0.3); from cell 2: q=2 -> 2/3*0.6 + 1/3 = 0.733, q=3 -> 0.533 -> 2;
    from cell 3: q=3 -> 2/3*0.6 + 1/3 = 0.733, q=0 -> 0.667 -> 3.
    """
    _, feats = _compat_hand_case()
    pos = compat_trajectories(feats)
    assert pos.T.tolist() == [[0, 0, 0, 1], [1, 1, 3, 3], [2, 2, 0, 1], [3, 3, 2, 2]]


def test_compat_hand_computed_labels():
    """Trajectory 1 jumps +2 right (dropped); trajectory 2 jumps -2 left (kept by the SIGNED test, bug #3).

    votes: traj 0 meets [1, 2, 1, 2] -> tie, first reached 1; traj 2 meets [2, 1, 1, 2] -> tie, first 2;
    traj 3 meets [3, 3, 3, 3] -> 3.  Writes in start order, last wins: frame 2 cell 0 and frame 3 cell 1
    are reached by trajectories 0 and 2 -> 2.  Unvisited cells (traj 1's, frame 3 cell 0) keep their labels.
    """
    labels, feats = _compat_hand_case()
    out = cbr_refine_compat(labels, feats)
    assert out[:, 0].tolist() == [[1, 2, 2, 3], [1, 2, 2, 3], [2, 2, 3, 3], [4, 2, 3, 3]]
    # abs() jump test (bug #3 fixed): trajectory 2 is dropped as well
    out_abs = cbr_refine_compat(labels, feats, signed=False)
    assert out_abs[:, 0].tolist() == [[1, 2, 2, 3], [1, 2, 1, 3], [1, 2, 3, 3], [4, 1, 3, 3]]
    assert torch.equal(out, cbr_compat_loop(labels, feats))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("signed", [True, False])
def test_compat_matches_loop_oracle(seed, signed):
    labels, feats = _random_case(seed + 100)
    got = cbr_refine_compat(labels, feats, signed=signed, dtype=torch.float64)
    assert torch.equal(got, cbr_compat_loop(labels, feats, signed=signed))


def test_compat_smooth_motion_survives_filter():
    # identical frames: all trajectories static, survive, and vote over time
    feats = torch.randn(1, 3, 4, 6, generator=torch.Generator().manual_seed(3)).repeat(5, 1, 1, 1)
    labels = torch.zeros(5, 3, 4, dtype=torch.long)
    labels[2] = 9  # one whole frame flickers
    out = cbr_refine_compat(labels, feats)
    assert torch.equal(out, torch.zeros_like(labels))


# ---------------------------------------------------------------- inputs
@pytest.mark.parametrize("fn", [cbr_refine, cbr_refine_compat])
def test_bad_inputs(fn):
    labels, feats = _random_case(0, T=3, h=2, w=3)
    with pytest.raises(InputError, match="do not match"):
        fn(labels, feats[:, :, :2])
    with pytest.raises(InputError, match="integers"):
        fn(labels.float(), feats)
    with pytest.raises(InputError, match=r"\[T, h, w\]"):
        fn(labels[0], feats)
    bad = feats.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        fn(labels, bad)
    with pytest.raises(InputError, match="empty"):
        fn(labels[:0], feats[:0])


def test_half_precision_features_accepted():
    labels, feats = _random_case(5, T=4, h=3, w=4)
    out16 = cbr_refine(labels, feats.half())
    assert torch.equal(out16, cbr_refine(labels, feats.half().float()))


def test_negative_radius_rejected():
    labels, feats = _random_case(1, T=3)
    with pytest.raises(InputError, match="radius"):
        cbr_refine(labels, feats, radius_sq=-1)


# ---------------------------------------------------------------- the authors' start cells
def _authors_starts_f32(side, arithmetic):
    """Hand computation with numpy float32 of the authors' ``int((i / side) * side)`` per cell index."""
    f32 = np.float32
    out = []
    for i in range(side):
        frac = f32(i) / f32(side) if arithmetic == "cpu" else f32(i) * f32(1.0 / side)  # CUDA: times 1/side
        out.append(int(f32(frac * f32(side))))
    return out


def _skipped(side, arithmetic):
    starts = _authors_starts_f32(side, arithmetic)
    return [i for i in range(side) if i not in starts]


def test_compat_start_rows_known_values():
    # CPU arithmetic: a 1280 x 720 video (44 x 80 grid) never starts a track at rows 13 and 26
    assert compat_start_index(44, "cpu").tolist() == [i - (i in (13, 26)) for i in range(44)]
    assert [s for s in range(1, 60) if _skipped(s, "cpu")][:11] == [22, 23, 29, 37, 38, 41, 43, 44, 46, 47, 49]
    assert _skipped(22, "cpu") == [13] and _skipped(23, "cpu") == [7, 14] and _skipped(56, "cpu") == [31]
    # the GPU's reciprocal product: other sides; the 28 x 52 grid (832 x 448) and side 44 keep every cell
    assert _skipped(25, "cuda") == [5, 10, 15, 20, 23] and _skipped(44, "cuda") == []
    assert _skipped(28, "cuda") == _skipped(52, "cuda") == _skipped(28, "cpu") == _skipped(52, "cpu") == []
    assert compat_start_index(25, "cuda").tolist() == [i - (i in (5, 10, 15, 20, 23)) for i in range(25)]


@pytest.mark.parametrize("arithmetic", ["cpu", "cuda"])
def test_compat_start_index_matches_hand_computation(arithmetic):
    for side in range(1, 130):
        assert compat_start_index(side, arithmetic).tolist() == _authors_starts_f32(side, arithmetic), side
    assert compat_start_index(44, "exact").tolist() == list(range(44))


@pytest.mark.parametrize("arithmetic,h,w", [("cpu", 22, 3), ("cuda", 3, 25)])
def test_compat_refine_uses_the_authors_start_cells(arithmetic, h, w):
    """A skipped row (column) starts no track; the cell before it starts two, the second in the skipped slot,
    where "last wins" counts it -- checked against the loop oracle fed with the hand-computed starts."""
    g = torch.Generator().manual_seed(5)
    T = 3
    feats = torch.randn(T, h, w, 4, generator=g)
    labels = torch.randint(0, 3, (T, h, w), generator=g)
    rows, cols = _authors_starts_f32(h, arithmetic), _authors_starts_f32(w, arithmetic)
    starts = [r * w + c for r in rows for c in cols]
    assert len(set(starts)) < h * w  # the case does skip cells
    pos = compat_trajectories(feats, start=arithmetic)
    assert pos[0].tolist() == starts
    got = cbr_refine_compat(labels, feats, dtype=torch.float64, start=arithmetic)
    assert torch.equal(got, cbr_compat_loop(labels, feats, starts=starts))
    # "exact": every cell starts its own track
    every = cbr_refine_compat(labels, feats, dtype=torch.float64, start="exact")
    assert torch.equal(every, cbr_compat_loop(labels, feats))
    assert not torch.equal(got, every)  # the skipped starts change labels here
    # the paper's cbr tracks every cell of every frame whatever the grid side
    assert torch.equal(cbr_refine(labels, feats), cbr_loop(labels, feats))


def test_compat_start_arithmetic_refused_when_unknown():
    labels, feats = _random_case(0, T=3, h=2, w=3)
    with pytest.raises(InputError, match="start-cell arithmetic"):
        cbr_refine_compat(labels, feats, start="gpu")


def test_compat_default_start_follows_the_device_the_tracking_runs_on():
    """The default ("device") is the authors' arithmetic on the features' device: on a CPU their CPU skips (a
    22-row grid never starts row 13), on a GPU their CUDA reciprocal product."""
    from vidseg_core.cbr import resolve_start_arithmetic
    from vidseg_core.refiners import CBRRefiner

    g = torch.Generator().manual_seed(5)  # the case of test_compat_refine_uses_the_authors_start_cells
    feats = torch.randn(3, 22, 3, 4, generator=g)
    labels = torch.randint(0, 3, (3, 22, 3), generator=g)
    assert torch.equal(compat_trajectories(feats)[0], compat_trajectories(feats, start="cpu")[0])
    assert torch.equal(cbr_refine_compat(labels, feats), cbr_refine_compat(labels, feats, start="cpu"))
    assert not torch.equal(cbr_refine_compat(labels, feats), cbr_refine_compat(labels, feats, start="exact"))
    assert resolve_start_arithmetic("device", torch.device("cuda", 0)) == "cuda"
    assert resolve_start_arithmetic("device", "cpu") == "cpu" and resolve_start_arithmetic("exact", "cuda") == "exact"
    assert CBRRefiner(compat=True).start == "device"
