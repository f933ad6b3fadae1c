"""KMeans (docs/design/authors_code.md#effective-settings, #label-assignment-and-the-scene-context-model): torch implementation vs scikit-learn, determinism, bad input."""
import sys

import numpy as np
import pytest
import torch

from vidseg_core.errors import InputError
from vidseg_core.kmeans import fit_kmeans


def _blobs(n=3000, C=32, centers=8, spread=0.6, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = 3 * torch.randn(centers, C, generator=g)
    x = c[torch.randint(0, centers, (n,), generator=g)] + spread * torch.randn(n, C, generator=g)
    return x / x.abs().amax(1, keepdim=True)  # max-abs normalised, like the authors' tokens


def _inertia(x, centers, labels):
    return float(((x.double() - centers.double()[labels]) ** 2).sum())


@pytest.mark.parametrize("k", [8, 20])
def test_torch_inertia_within_one_percent_of_sklearn_on_clustered_data(k):
    x = _blobs()
    t = fit_kmeans(x, k, n_init=10, seed=1, impl="torch")
    s = fit_kmeans(x, k, n_init=10, seed=1, impl="sklearn")
    assert t.inertia <= s.inertia * 1.01
    assert t.inertia >= s.inertia * 0.95  # a far lower value would mean a wrong inertia formula


def test_torch_inertia_within_one_percent_of_sklearn_on_oracle_features(blackswan_masks):
    from tests.oracles.coarse_oracle import oracle_features

    f = oracle_features(blackswan_masks[:3], noise=0.3)
    x = f.aggregated.reshape(-1, f.aggregated.shape[-1])
    t = fit_kmeans(x, 20, n_init=10, seed=1, impl="torch")
    s = fit_kmeans(x, 20, n_init=10, seed=1, impl="sklearn")
    assert abs(t.inertia - s.inertia) <= 0.01 * s.inertia


def test_result_is_consistent():
    x = _blobs(n=800, C=16)
    r = fit_kmeans(x, 6, n_init=3, seed=3)
    centers, labels, inertia = r  # unpacks like a tuple
    assert centers.shape == (6, 16) and centers.dtype == torch.float32
    assert labels.shape == (800,) and labels.dtype == torch.long
    d = torch.cdist(x.double(), centers.double())
    assert torch.equal(labels, d.argmin(1))  # labels are the nearest centres
    assert inertia == pytest.approx(_inertia(x, centers, labels), rel=1e-4)
    # centres are the means of their clusters (Lloyd fixed point)
    for c in range(6):
        assert torch.allclose(centers[c], x[labels == c].mean(0), atol=1e-4)


def test_deterministic_with_seed():
    x = _blobs(n=1000, C=8, seed=5)
    a = fit_kmeans(x, 10, n_init=4, seed=7)
    b = fit_kmeans(x.clone(), 10, n_init=4, seed=7)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centers, b.centers) and a.inertia == b.inertia


def test_k_equals_number_of_tokens_and_duplicates():
    x = torch.tensor([[0.0, 0], [0, 0], [1, 1], [1, 1], [5, 5], [5, 5]])
    r = fit_kmeans(x, 6, n_init=2, seed=0)  # more clusters than distinct points: empty clusters handled
    assert r.inertia == pytest.approx(0.0, abs=1e-9)
    assert r.centers.shape == (6, 2)
    r3 = fit_kmeans(x, 3, n_init=2, seed=0)
    assert r3.inertia == pytest.approx(0.0, abs=1e-9)
    assert len(set(r3.labels.tolist())) == 3


def test_numpy_input_and_sklearn_impl_shapes():
    x = _blobs(n=300, C=4).numpy()
    r = fit_kmeans(x, 3, n_init=2, seed=0, impl="sklearn")
    assert r.centers.shape == (3, 4) and r.labels.shape == (300,)


@pytest.mark.parametrize("impl", ["torch", "sklearn"])
def test_k_larger_than_tokens(impl):
    with pytest.raises(InputError, match="more than the 5 tokens"):
        fit_kmeans(torch.randn(5, 3), 20, impl=impl)


def test_bad_input():
    with pytest.raises(InputError, match=r"\[n, C\]"):
        fit_kmeans(torch.randn(2, 5, 3), 2)
    with pytest.raises(InputError, match="no data"):
        fit_kmeans(torch.randn(0, 3), 1)
    with pytest.raises(InputError, match="NaN"):
        fit_kmeans(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), 1)
    with pytest.raises(InputError, match="positive integer"):
        fit_kmeans(torch.randn(5, 3), 0)
    with pytest.raises(InputError, match="implementation"):
        fit_kmeans(torch.randn(5, 3), 2, impl="faiss")
    with pytest.raises(InputError, match="n_init"):
        fit_kmeans(torch.randn(5, 3), 2, n_init=0)
    with pytest.raises(InputError, match="tensor or array"):
        fit_kmeans([[1.0, 2.0]], 1)


def test_chunked_distances_give_the_same_result():
    x = _blobs(n=700, C=8, seed=2)
    a = fit_kmeans(x, 5, n_init=2, seed=1, chunk_size=64)
    b = fit_kmeans(x, 5, n_init=2, seed=1, chunk_size=100000)
    assert torch.equal(a.labels, b.labels)
    assert np.isclose(a.inertia, b.inertia, rtol=1e-5)


# ---------------------------------------------------------------- the authors' clustering, from every interface
def test_sklearn_seed_one_is_the_authors_call_after_their_global_seed():
    """The authors call KMeans(n_clusters, n_init=10) without random_state right after seed_everything(1)
    (numpy's global RNG seeded with 1): that is random_state=1, i.e. impl="sklearn" with seed 1."""
    from sklearn.cluster import KMeans

    x = _blobs(n=1200, C=24, centers=10, spread=1.5, seed=4)
    np.random.seed(1)
    theirs = KMeans(n_clusters=12, n_init=10).fit(x.numpy())
    ours = fit_kmeans(x, 12, n_init=10, seed=1, impl="sklearn")
    assert np.array_equal(ours.labels.numpy(), theirs.labels_)
    assert np.array_equal(ours.centers.numpy(), theirs.cluster_centers_.astype(np.float32))


@pytest.mark.parametrize("command", ["segment", "dataset"])
def test_cli_kmeans_option_reaches_the_settings(command, tmp_path):
    from vidseg_core.__main__ import build_parser
    from vidseg_core.commands.segment import settings_from_args

    parser = build_parser()
    base = [command, str(tmp_path), "--model", "tiny-sd", "--out", str(tmp_path / "o")]
    if command == "dataset":
        base += ["--layout", "folders"]
    assert settings_from_args(parser.parse_args(base)).kmeans_impl == "torch"
    args = parser.parse_args(base + ["--kmeans", "sklearn", "--seed", "1"])
    settings = settings_from_args(args)
    assert settings.kmeans_impl == "sklearn" and settings.seed == 1


def test_nodes_offer_the_authors_kmeans(monkeypatch):
    from tools.pack_loader import load_pack, pack_nodes

    pack = load_pack()
    nodes = pack_nodes(pack)
    km = nodes["VidSegKMeansInit"].INPUT_TYPES()["required"]["implementation"]
    assert "sklearn" in km[1].get("options", km[0]) and "authors' exact clustering" in km[1]["tooltip"]
    seg = nodes["VidSegSegmentVideo"]
    spec = seg.INPUT_TYPES()["optional"]["kmeans"]
    assert list(spec[1].get("options", spec[0])) == ["torch", "sklearn"] and spec[1]["default"] == "torch"
    seen = {}

    class Stop(Exception):
        pass

    def fake_segmenter(bb, settings, *args, **kw):
        seen["settings"] = settings
        raise Stop

    import contextlib

    run_module = sys.modules[seg.__module__.rsplit(".", 1)[0] + ".segment_run"]
    monkeypatch.setattr(run_module, "VideoSegmenter", fake_segmenter)
    monkeypatch.setattr(run_module.bridge, "model_on_device", lambda model, keep: contextlib.nullcontext(model))
    with pytest.raises(Stop):
        seg().segment(object(), torch.rand(2, 64, 128, 3), seed=1, kmeans="sklearn")
    assert seen["settings"].kmeans_impl == "sklearn" and seen["settings"].seed == 1


def test_kmeans_impls_benchmark_runs_small():
    from benchmarks.kmeans_impls import matched_agreement, run

    out = run(frames=1, h=6, w=8, channels=8, k=3, regions=4, n_init=2, data_seeds=(0,), repeat=1, log=lambda s: None)
    d = out["sets"][0]
    assert d["sklearn_is_authors"] and 0 < d["agreement"] <= 1 and d["torch_s"] and d["sklearn_cpu_s"]
    assert matched_agreement(np.array([0, 0, 1, 2]), np.array([2, 2, 0, 1]), 3) == 1.0
