"""The path a GPU runs, run on the CPU: bf16 with every device-chosen default forced to its CUDA value.

CI has no GPU, and time on a GPU is scarce, so a dtype mismatch or a broken branch on that path must show
here.  Forced: fused q/k sharing in the modulation (``resolve_mode``), the sync-free KNN, KMeans checking its
convergence every 8 iterations, float32 guided-filter box sums.  What stays CUDA-only: pinned copies, CUDA
memory queries, ``empty_cache``.
"""
from __future__ import annotations

import pytest
import torch

import vidseg_core.context_model as context_model
import vidseg_core.kmeans as kmeans
import vidseg_core.modulation.runner as runner
import vidseg_core.upsample.guided as guided
from vidseg_core.backbones import load_backbone
from vidseg_core.pipeline import SegmentSettings, segment_video


@pytest.fixture
def cuda_defaults(monkeypatch):
    """Every default the core picks from the device type, set as on CUDA; returns what was used."""
    used: dict = {}
    resolve, knn_init, fit, box = runner.resolve_mode, context_model.KNNContextModel.__init__, kmeans._fit_torch, \
        guided.box_precision

    def resolve_as_cuda(setting, device):
        used["share_attention"] = resolve(setting, torch.device("cuda") if setting is None else device)
        return used["share_attention"]

    def knn_sync_free(self, *a, **k):
        knn_init(self, *a, **dict(k, sync_free=True if k.get("sync_free") is None else k["sync_free"]))
        used["knn_sync_free"] = self.sync_free

    def fit_checking_every_8(x, k, n_init, seed, device, max_iter, tol, chunk, check_every):
        used["kmeans_check_every"] = 8 if check_every is None else check_every
        return fit(x, k, n_init, seed, device, max_iter, tol, chunk, used["kmeans_check_every"])

    def box_as_cuda(device, precision="auto"):
        used["box_precision"] = "float32" if precision == "auto" else box(device, precision)
        return used["box_precision"]

    monkeypatch.setattr(runner, "resolve_mode", resolve_as_cuda)
    monkeypatch.setattr(context_model.KNNContextModel, "__init__", knn_sync_free)
    monkeypatch.setattr(kmeans, "_fit_torch", fit_checking_every_8)
    monkeypatch.setattr(guided, "box_precision", box_as_cuda)
    return used


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-svd"])
def test_whole_pipeline_in_bf16_with_the_cuda_defaults(name, cuda_defaults):
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 67, 131, 3, generator=g)  # work size 64x128, grid 4x8
    frames[:, :, :60] *= 0.2
    bb = load_backbone(name, device="cpu", precision="bf16")
    assert bb.dtype == torch.bfloat16
    for mode in ("fast", "quality"):
        labels, coarse, summary = segment_video(bb, frames, SegmentSettings(num_clusters=3, mode=mode),
                                                keep_coarse=True)
        assert labels.shape == (3, 67, 131) and labels.dtype == torch.long and coarse.shape == (3, 4, 8)
        assert set(labels.unique().tolist()) <= set(summary.table.values)
    assert cuda_defaults == {"share_attention": "fused", "knn_sync_free": True, "kmeans_check_every": 8,
                             "box_precision": "float32"}
