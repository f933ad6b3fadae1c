"""GPU readiness checked on the CPU: no host/device synchronisation inside the coarse stage's loops.

:class:`tests.helpers.sync_counter.SyncCounter` counts what would make the host wait for a GPU (value
reads, data-dependent sizes, host copies).  Each check runs the same code on a small and a large problem
(more KNN chunks, more frames, more Lloyd iterations) and asserts the same small count: nothing scales
with the loop length.  Equality with the previous results is proven by the oracle and equality tests.
"""
import pytest
import torch

from tests.helpers.sync_counter import SyncCounter
from vidseg_core.cbr import cbr_refine, cbr_refine_compat
from vidseg_core.context_model import KNNContextModel, SceneContext
from vidseg_core.kmeans import fit_kmeans
from vidseg_core.modulation.masks import lanczos_upsample_mask
from vidseg_core.tensor_ops import one_hot_mask, smallest_k


def _count(fn):
    with SyncCounter() as sc:
        fn()
    return sc


def test_counter_sees_every_kind_of_synchronisation():
    x = torch.arange(6.0) - 2
    sc = _count(lambda: (x.sum().item(), bool(x[0]), int(x[1]), float(x[2]), x[x > 0], torch.nonzero(x),
                         torch.unique(x), torch.equal(x, x), x.cpu(), x.tolist(), x.numpy(), x.to("cpu")))
    kinds = sorted(k for k, _ in sc.events)
    assert kinds == sorted(["_local_scalar_dense", "bool_mask_index", "nonzero", "_unique2", "equal",
                            "to_host.cpu", "to_host.tolist", "to_host.numpy", "to_host.to"]), sc.report()
    assert sum(n for (k, _), n in sc.events.items() if k == "_local_scalar_dense") == 4  # item, bool, int, float
    assert _count(lambda: (x * 2 + 1).argmax(0)).total == 0
    assert _count(lambda: x.to(torch.device("cpu"))).total == 0  # a device object is the compute device


def _data(n, C=24, classes=(3, 7, 11), seed=0):
    g = torch.Generator().manual_seed(seed)
    cent = torch.randn(len(classes), C, generator=g)
    which = torch.randint(0, len(classes), (n,), generator=g)
    return cent[which] + 0.7 * torch.randn(n, C, generator=g), torch.tensor(classes)[which]


def test_knn_predict_has_no_synchronisation_per_chunk():
    x, y = _data(600)
    knn = KNNContextModel(4, chunk_size=50, sync_free=True).fit(x, y)  # the default on a GPU
    one = _count(lambda: knn.predict(x[:50]))  # 1 chunk
    many = _count(lambda: knn.predict(torch.cat([x] * 3)))  # 36 chunks
    assert one.total == many.total <= 1, many.report()  # the input's finiteness check only


@pytest.mark.parametrize("sync_free", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_smallest_k_orders_by_value_then_index(dtype, sync_free):
    g = torch.Generator().manual_seed(1)
    d = torch.randint(0, 6, (40, 30), generator=g).to(dtype) / 4  # many exact ties
    d[0, 3] = -0.0  # a negative zero is a zero
    d[1] = torch.arange(30, dtype=dtype)  # no tie at all
    expect = torch.sort(d.double() + 0.0, dim=1, stable=True).indices[:, :5]
    assert torch.equal(smallest_k(d, 5, sync_free), expect)
    assert torch.equal(smallest_k(d[1:2], 5, sync_free), expect[1:2])
    assert torch.equal(one_hot_mask(torch.tensor([2, 0]), 3), torch.tensor([[False, False, True], [True, False, False]]))


def _features(T, h=6, w=8, C=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    cent = 2 * torch.randn(3, C, generator=g)
    gt = (torch.arange(w)[None, None, :].expand(T, h, w) * 3 // w)
    return cent[gt] + 0.5 * torch.randn(T, h, w, C, generator=g), cent[gt] + 0.5 * torch.randn(T, h, w, C, generator=g)


@pytest.mark.parametrize("refiner", ["cbr", "cbr_compat", "none"])
def test_scene_context_step_synchronisations_do_not_grow_with_frames(refiner):
    agg, corr = _features(12)
    ctx = SceneContext(refiner=refiner)
    ctx.init(agg[:4], None, 0, num_clusters=5, n_init=1)
    ctx.knn.chunk_size, ctx.knn.sync_free = 32, True  # 6 chunks for 4 frames, 18 for 12; the GPU default
    small = _count(lambda: ctx.step(agg[:4], corr[:4]))
    large = _count(lambda: ctx.step(agg, corr))
    assert small.events == large.events, (small.report(), large.report())
    # input checks (finite features: KNN + refiner) and the refiner's label set; no copy to the host
    assert large.total <= 4 and not any(k.startswith("to_host") for k, _ in large.events), large.report()


@pytest.mark.parametrize("fn", [cbr_refine, cbr_refine_compat])
def test_cbr_synchronisations_do_not_grow_with_frames(fn):
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 3, (12, 6, 8), generator=g)
    _, corr = _features(12)
    small, large = _count(lambda: fn(lab[:3], corr[:3])), _count(lambda: fn(lab, corr))
    assert small.events == large.events and large.total <= 2, large.report()


def test_kmeans_reads_the_convergence_test_only_every_check_every_iterations():
    x, _ = _data(400, C=8)
    counts = {}
    for max_iter in (4, 40):
        counts[max_iter] = _count(lambda: fit_kmeans(x, 12, n_init=2, max_iter=max_iter, tol=0.0, check_every=1000))
    assert counts[4].events == counts[40].events and counts[40].total <= 6, counts[40].report()
    every = _count(lambda: fit_kmeans(x, 12, n_init=2, max_iter=40, tol=0.0, check_every=1))
    assert every.total > counts[40].total  # the CPU default decides on the host every iteration (free there)


@pytest.mark.parametrize("tol", [0.0, 1e-4, 1e-2])
def test_kmeans_result_does_not_depend_on_check_every(tol):
    x, _ = _data(500, C=8, seed=3)
    runs = [fit_kmeans(x, 10, n_init=3, seed=2, tol=tol, check_every=c) for c in (1, 3, 1000)]
    for r in runs[1:]:
        assert torch.equal(r.labels, runs[0].labels) and torch.equal(r.centers, runs[0].centers)
        assert r.inertia == runs[0].inertia and r.n_iter == runs[0].n_iter


def test_kmeans_empty_clusters_moved_on_the_device_like_on_the_host():
    x = torch.cat([torch.zeros(50, 2), torch.ones(50, 2), torch.tensor([[5.0, 5.0], [6.0, 6.0]])])  # duplicates
    a = fit_kmeans(x, 4, n_init=2, seed=0, check_every=1)
    b = fit_kmeans(x, 4, n_init=2, seed=0, check_every=50)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centers, b.centers) and a.n_iter == b.n_iter


def test_lanczos_mask_upsampling_has_no_synchronisation():
    m = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0)) > 0.5
    lanczos_upsample_mask(m, (40, 56))  # coefficient tables are built once per size, on the host
    assert _count(lambda: lanczos_upsample_mask(m, (40, 56))).total == 0


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_guided_filter_host_reads_do_not_grow_with_labels_or_frames(precision):
    """The fast mode reads the host only while checking its inputs, never per frame or per label."""
    from vidseg_core.upsample import GuidedFilterUpsampler

    def run(T, L):
        g = torch.Generator().manual_seed(T)
        frames, coarse = torch.rand(T, 33, 47, 3, generator=g), torch.randint(0, L, (T, 4, 6), generator=g)
        return _count(lambda: GuidedFilterUpsampler(box_precision=precision).upsample(frames, coarse, list(range(L))))

    small, large = run(1, 2), run(5, 7)
    assert small.events == large.events and small.total <= 6, (small.report(), large.report())
