"""The coarse stage gives the same labels whatever the number of CPU threads.

On fixed features every decision of the coarse stage (KMeans, KNN, CBR) is independent of the torch
thread count: the row-wise reductions it uses are computed by one thread per row, the full reductions
(means, variances, inertia, k-means++ potentials) in float64 or on identical partial sums, and every
argmax / top-k tie has a fixed rule.  The features themselves are *not* thread-invariant on the CPU
(oneDNN's 1x1 convolutions and GroupNorm round differently with 2, 3 or 4 threads: see
docs/determinism_and_sync.md); this test isolates the coarse stage on features from the real blackswan
clip's masks.
"""
import pytest
import torch

from tests.oracles.coarse_oracle import oracle_features
from vidseg_core.context_model import coarse_segment
from vidseg_core.kmeans import fit_kmeans


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("refiner", ["cbr", "cbr_compat"])
def test_coarse_labels_identical_with_one_and_two_threads(blackswan_masks, restore_threads, refiner):
    # wide float16 features like the real ones (many channels: BLAS blocking and reduction splits matter)
    f = oracle_features(blackswan_masks[:6], noise=0.8, channels=320)
    f.aggregated, f.correspondence = f.aggregated.half(), f.correspondence.half()
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        cs = coarse_segment(f, k=20, batch_size=3, refiner=refiner, reference_mask=blackswan_masks[0], n_init=2)
        km = fit_kmeans(f.aggregated[:3].reshape(-1, 320), 20, n_init=2, seed=1)
        out[threads] = (cs.labels, cs.meta["kmeans_inertia"], km.centers, km.labels, km.inertia)
    a, b = out[1], out[2]
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3]) and a[4] == b[4]
