"""Scene context model (paper §4.1, docs/design/authors_code.md#label-assignment-and-the-scene-context-model): KNN vs sklearn, streaming loop, batching, bad input."""
import gc
import weakref

import numpy as np
import pytest
import torch

from vidseg_core.batching import plan_batches
from vidseg_core.context_model import KNNContextModel, SceneContext, coarse_segment
from vidseg_core.errors import InputError
from vidseg_core.refiners import Refiner
from vidseg_core.video_features import VideoFeatures


def _clustered(n, C=16, classes=(2, 5, 9, 255), spread=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    cent = 2 * torch.randn(len(classes), C, generator=g)
    which = torch.randint(0, len(classes), (n,), generator=g)
    return cent[which] + spread * torch.randn(n, C, generator=g), torch.tensor(classes)[which]


def _video(N=20, h=6, w=8, C=12, seed=0, classes=3):
    """Synthetic features: class blobs (vertical stripes that drift) + noise; returns VideoFeatures and GT."""
    g = torch.Generator().manual_seed(seed)
    cent = 3 * torch.randn(classes, C, generator=g)
    xs = torch.arange(w)
    gt = torch.stack([((xs[None, :].expand(h, w) + t // 3) * classes // w) % classes for t in range(N)])
    agg = cent[gt] + 0.3 * torch.randn(N, h, w, C, generator=g)
    agg = agg / agg.abs().amax(-1, keepdim=True)
    corr = cent[gt] + 0.3 * torch.randn(N, h, w, C, generator=g)
    return VideoFeatures(agg, corr, (h * 16, w * 16), (h * 16, w * 16)), gt


# ---------------------------------------------------------------- KNN
@pytest.mark.parametrize("spread", [0.8, 2.5])
def test_knn_matches_sklearn(spread):
    x, y = _clustered(1500, spread=spread)
    q, _ = _clustered(800, spread=spread, seed=1)
    ours = KNNContextModel(4, chunk_size=300).fit(x, y).predict(q)
    ref = KNNContextModel(4, impl="sklearn").fit(x, y).predict(q)
    assert torch.equal(ours, ref)
    assert set(ours.unique().tolist()) <= {2, 5, 9, 255}


def test_knn_vote_tie_goes_to_smallest_label_like_installed_sklearn():
    # query at 0: two neighbours of label 7 (distances 1, 2) and two of label 3 (distances 3, 4)
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0], [50.0]])
    y = torch.tensor([7, 7, 3, 3, 1])
    q = torch.tensor([[0.0], [0.6]])
    from sklearn.neighbors import KNeighborsClassifier

    sk = KNeighborsClassifier(n_neighbors=4).fit(x.numpy(), y.numpy()).predict(q.numpy())
    assert sk.tolist() == [3, 3]  # what the installed sklearn does: smallest label on ties
    assert KNNContextModel(4).fit(x, y).predict(q).tolist() == [3, 3]


def test_knn_distance_tie_at_kth_neighbour_takes_smallest_index():
    # k = 3; neighbours at distance 1 (label 5), 2 (label 1), then three at distance 3 with labels 1, 5, 5
    x = torch.tensor([[1.0], [2.0], [3.0], [-3.0], [3.0]])
    y = torch.tensor([5, 1, 1, 5, 5])
    assert KNNContextModel(3).fit(x, y).predict(torch.tensor([[0.0]])).tolist() == [1]
    y2 = torch.tensor([5, 1, 5, 1, 1])
    assert KNNContextModel(3).fit(x, y2).predict(torch.tensor([[0.0]])).tolist() == [5]


def test_knn_fewer_training_tokens_than_k():
    x = torch.tensor([[0.0], [10.0]])
    assert KNNContextModel(4).fit(x, torch.tensor([4, 6])).predict(torch.tensor([[1.0], [9.0]])).tolist() == [4, 4]


def test_knn_bad_input():
    knn = KNNContextModel(4)
    with pytest.raises(InputError, match="not initialised"):
        knn.predict(torch.zeros(2, 3))
    with pytest.raises(InputError, match="no labelled tokens"):
        knn.fit(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    knn.fit(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(InputError, match="channels"):
        knn.predict(torch.zeros(2, 5))
    with pytest.raises(InputError, match="positive integer"):
        KNNContextModel(0)


def test_knn_state_is_a_copy():
    x, y = _clustered(100, C=4)
    knn = KNNContextModel(4).fit(x, y)
    before = knn.predict(x)
    x.zero_()  # caller reuses its buffer
    assert torch.equal(knn.predict(_clustered(100, C=4)[0]), before)


# ---------------------------------------------------------------- streaming loop
class ConstantRefiner(Refiner):
    """Test refiner: records its inputs and, on a chosen call, returns a constant label."""

    name = "constant"

    def __init__(self, on_call=None, value=None):
        self.calls = []
        self.on_call, self.value = on_call, value

    def refine(self, labels, corr_features):
        self.calls.append((labels.clone(), tuple(corr_features.shape)))
        if len(self.calls) == self.on_call:
            return torch.full_like(labels, self.value)
        return labels.clone()


ConstantRefiner.__module__ = "tests.test_context_model"  # not a library refiner (contract test scope)


def test_autoregressive_state_uses_refined_labels_of_previous_batch():
    feats, _ = _video(N=42, seed=1)
    ctx = SceneContext(refiner=ConstantRefiner(on_call=2, value=None))
    table = ctx.init(feats.aggregated[:14], num_clusters=5, n_init=2, seed=0)
    last = max(table.values)
    ctx.refiner.value = last
    out = [ctx.step(feats.aggregated[s:s + 14], feats.correspondence[s:s + 14]) for s in (0, 14, 28)]
    assert torch.equal(out[1], torch.full_like(out[1], last))  # batch 1's refined labels: constant
    # batch 2 is labelled by a KNN fit only on batch 1 (features + refined labels): constant too
    assert torch.equal(ctx.refiner.calls[2][0], torch.full((14, 6, 8), last))
    assert ctx.knn.num_train == 14 * 6 * 8  # state = one batch, not the video


def test_streaming_equals_whole_video():
    feats, _ = _video(N=31, seed=2)
    cs = coarse_segment(feats, k=6, batch_size=14, n_init=2, seed=3)
    ctx = SceneContext()
    ctx.init(feats.aggregated[:14], num_clusters=6, n_init=2, seed=3)
    parts = list(ctx.run((feats.aggregated[b.start:b.stop], feats.correspondence[b.start:b.stop], b.write_offset)
                         for b in plan_batches(31, 14)))
    assert [p.shape[0] for p in parts] == [14, 14, 3]
    assert torch.equal(torch.cat(parts), cs.labels)
    assert cs.labels.dtype == torch.long and cs.labels.shape == (31, 6, 8)


def test_tail_batch_overlaps_but_never_overwrites():
    feats, _ = _video(N=17, seed=3)
    spy = ConstantRefiner()
    cs17 = coarse_segment(feats, k=6, n_init=2, refiner=spy)
    assert [c[0].shape[0] for c in spy.calls] == [14, 14]  # tail computed on the last 14 frames
    cs14 = coarse_segment(feats.slice(0, 14), k=6, n_init=2, refiner=ConstantRefiner())
    assert torch.equal(cs17.labels[:14], cs14.labels)  # frames 0..13 written once, by batch 0
    assert cs17.meta["batches"] == [(0, 14, 0), (3, 17, 14)]


@pytest.mark.parametrize("N", [1, 5, 14])
def test_short_clips(N):
    feats, gt = _video(N=N, seed=4)
    cs = coarse_segment(feats, k=4, n_init=2, reference_mask=gt[0].numpy())
    assert cs.labels.shape == (N, 6, 8)
    assert set(cs.labels.unique().tolist()) <= set(gt[0].unique().tolist())
    assert (cs.labels == gt[:N]).float().mean() > 0.9


def test_deterministic_with_seed():
    feats, gt = _video(N=20, seed=5)
    a = coarse_segment(feats, k=8, n_init=3, seed=11, reference_mask=gt[0].numpy())
    b = coarse_segment(feats, k=8, n_init=3, seed=11, reference_mask=gt[0].numpy())
    assert torch.equal(a.labels, b.labels) and a.meta == b.meta and a.table == b.table


def test_reference_on_a_later_frame():
    feats, gt = _video(N=30, seed=6)
    cs = coarse_segment(feats, k=6, n_init=2, reference_mask=gt[20].numpy(), reference_frame=20)
    assert cs.meta["kmeans_batch"] == (14, 28)  # KMeans on the batch holding the reference frame
    assert (cs.labels[20] == gt[20]).float().mean() > 0.9
    assert (cs.labels == gt).float().mean() > 0.85


def test_reference_labels_and_table():
    feats, gt = _video(N=14, seed=7)
    ref = gt[0].numpy().copy() * 10 + 1  # values 1, 11, 21
    ref[:, :2] = 255  # void
    cs = coarse_segment(feats, k=10, n_init=2, reference_mask=ref, names={11: "middle"})
    assert set(cs.labels.unique().tolist()) <= {1, 11, 21}
    assert cs.table.values == sorted(set(cs.meta["cluster_to_label"].values()))
    assert cs.table.name_of(11) == "middle" and cs.table.kind == "label"
    assert all(0 <= c < 10 for c in cs.unassigned_clusters)
    assert set(cs.unassigned_clusters).isdisjoint(cs.meta["cluster_to_label"])
    rgb = cs.colorize()
    assert rgb.shape == (14, 6, 8, 3)
    v = cs.table.values[0]
    assert torch.equal(cs.masks(v), cs.labels == v)
    oh = cs.one_hot()
    assert oh.shape == (14, len(cs.table), 6, 8) and bool((oh.sum(1) <= 1).all())
    assert cs.slice(2, 5).labels.shape == (3, 6, 8)
    with pytest.raises(InputError):
        cs.masks(3)
    with pytest.raises(InputError):
        cs.slice(5, 2)


def test_half_precision_features():
    feats, gt = _video(N=16, seed=10)
    half = VideoFeatures(feats.aggregated.half(), feats.correspondence.half(), feats.frame_size, feats.work_size)
    cs = coarse_segment(half, k=6, n_init=2, reference_mask=gt[0].numpy())
    assert (cs.labels == gt).float().mean() > 0.9


def test_without_reference_labels_are_renumbered_clusters():
    feats, _ = _video(N=14, seed=8)
    cs = coarse_segment(feats, k=5, n_init=2)
    assert cs.table.kind == "cluster"
    vals = cs.table.values
    assert vals == list(range(len(vals)))
    first = cs.labels[0].flatten().tolist()
    # numbering by first appearance in raster order of the reference frame (KNN may smooth a few cells)
    seen = list(dict.fromkeys(first))
    assert seen == sorted(seen)


def test_progress_callback():
    feats, _ = _video(N=20)
    seen = []
    coarse_segment(feats, k=4, n_init=1, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(14, 20), (20, 20)]


# ---------------------------------------------------------------- bounded memory
def _live_tensor_bytes():
    """Bytes of all tensor storages alive in the process (deduplicated by storage)."""
    import warnings

    seen = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for o in gc.get_objects():
            if isinstance(o, torch.Tensor):
                try:
                    st = o.untyped_storage()
                    seen[st.data_ptr()] = st.nbytes()
                except RuntimeError:  # fake tensors a torch.compile test left in dynamo's caches: no data
                    continue
    return sum(seen.values())


def test_streaming_memory_is_bounded_over_200_frames():
    """200 frames of the bedroom grid (960x540 -> 960x512 work -> 32x60) fed batch by batch from a generator.

    The context must not keep earlier batches alive (their weak references die), its state is one
    batch, and the bytes of all live tensors do not grow with the number of frames fed.
    """
    h, w, C, B, N = 32, 60, 8, 2, 200
    g = torch.Generator().manual_seed(0)
    cent = torch.randn(6, C, generator=g)
    refs = []

    def batches():
        for b in plan_batches(N, B):
            idx = torch.randint(0, 6, (b.size, h, w), generator=g)
            agg = cent[idx] + 0.3 * torch.randn(b.size, h, w, C, generator=g)
            corr = agg + 0.1 * torch.randn(b.size, h, w, C, generator=g)
            refs.append((weakref.ref(agg), weakref.ref(corr)))
            yield agg, corr, b.write_offset

    ctx = SceneContext(refiner="cbr")
    gen = batches()
    first = next(gen)
    ctx.init(first[0], num_clusters=8, n_init=1, seed=0)
    ctx.step(*first)
    del first
    batch_bytes = B * h * w * C * 4
    baseline = None
    frames = B
    for i, labels in enumerate(ctx.run(gen)):
        frames += labels.shape[0]
        assert ctx.state_nbytes() <= batch_bytes
        if i % 10 == 0:
            gc.collect()
            alive = sum(r() is not None for pair in refs[:-1] for r in pair)
            assert alive == 0, "the scene context keeps earlier batches alive"
            live = _live_tensor_bytes()
            baseline = live if baseline is None else baseline
            assert live - baseline <= batch_bytes, f"live tensors grew by {live - baseline} bytes after {frames} frames"
    assert frames == N and len(refs) == N // B


# ---------------------------------------------------------------- bad input
def test_bad_input():
    feats, gt = _video(N=14, seed=9)
    ctx = SceneContext()
    with pytest.raises(InputError, match="not initialised"):
        ctx.step(feats.aggregated, feats.correspondence)
    ctx.init(feats.aggregated, num_clusters=4, n_init=1)
    with pytest.raises(InputError, match="grid"):
        ctx.step(feats.aggregated[:, :5], feats.correspondence[:, :5])
    with pytest.raises(InputError, match="channels"):
        ctx.step(feats.aggregated[..., :5], feats.correspondence)
    with pytest.raises(InputError, match="disagree"):
        ctx.step(feats.aggregated, feats.correspondence[:3])
    with pytest.raises(InputError, match="write_offset"):
        ctx.step(feats.aggregated, feats.correspondence, write_offset=14)
    with pytest.raises(InputError, match=r"\[T, h, w, C\]"):
        ctx.step(feats.aggregated[0], feats.correspondence[0])
    with pytest.raises(InputError, match="more than the 48 tokens"):
        coarse_segment(feats.slice(0, 1), k=60)
    with pytest.raises(InputError, match="no frames"):
        coarse_segment(VideoFeatures(torch.zeros(0, 6, 8, 4), torch.zeros(0, 6, 8, 4), (96, 128), (96, 128)))
    with pytest.raises(InputError, match="no labels"):
        coarse_segment(feats, k=4, n_init=1, reference_mask=np.full((96, 128), 255))
    with pytest.raises(InputError, match="VideoFeatures"):
        coarse_segment(feats.aggregated)
    with pytest.raises(InputError, match="Reference frame 30"):
        coarse_segment(feats, k=4, reference_frame=30)
    with pytest.warns(UserWarning, match="resizing"):
        cs = coarse_segment(feats, k=4, n_init=1, reference_mask=np.kron(gt[0].numpy(), np.ones((3, 3), int)))
    assert set(cs.labels.unique().tolist()) <= {0, 1, 2}
    with pytest.raises(InputError, match="Unknown refiner"):
        coarse_segment(feats, k=4, refiner="crf")
