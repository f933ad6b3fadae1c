"""Compacted rows: SD denoises only the present (label, frame) pairs; outputs equal whole runs."""
from __future__ import annotations

import pytest
import torch

from vidseg_core.backbones import load_backbone
from vidseg_core.errors import InputError
from vidseg_core.features import prepare_batch
from vidseg_core.modulation import ModulationSettings, modulate_batch
from vidseg_core.modulation.reference import reference_pass
from vidseg_core.modulation.rows import present_rows, take_rows

from test_modulation_savings import _count_host_reads  # noqa: E402

FRAME = (40, 70)


def _absent_coarse(T=3):
    """Labels 0, 1 in every frame; label 2 in frames 0-1 only, label 3 in the last frame only."""
    c = torch.zeros(T, 4, 8, dtype=torch.long)
    c[:, :, 4:] = 1
    c[0, :2, :2] = 2
    c[1, 1, 1] = 2
    c[T - 1, 2:, 6:] = 3
    return c


@pytest.fixture(scope="module")
def sd():
    bb = load_backbone("tiny-sd")
    inputs = prepare_batch(bb, torch.rand(3, 64, 128, 3, generator=torch.Generator().manual_seed(1)))
    _, _, store = reference_pass(bb, inputs)
    return bb, inputs, _absent_coarse(), store


def _run(bb, inputs, coarse, store=None, **kw):
    st = ModulationSettings(return_difference_maps=True, **kw)
    return modulate_batch(bb, inputs, coarse, None, FRAME, st, reference_store=store)


CASES = [  # (store given, settings)
    (True, {}),
    (False, {}),  # one chunk, the reference repeated in it
    (False, dict(reference_pass="store")),
    (False, dict(reference_pass="repeat", max_runs_per_chunk=2)),  # chunks of rows, reference rows per chunk
    (True, dict(share_attention="probabilities")),
    (False, dict(share_attention="probabilities", reference_pass="repeat", max_runs_per_chunk=3)),
    (True, dict(share_attention="fused", share_prefix=False)),
    (False, dict(share_attention=False, share_prefix=False)),
]


@pytest.mark.parametrize("given,kw", CASES)
def test_compacted_rows_equal_whole_runs(sd, given, kw):
    bb, inputs, coarse, store = sd
    store = store if given else None
    full = _run(bb, inputs, coarse, store, skip_absent_rows=False, **kw)
    rows = _run(bb, inputs, coarse, store, **kw)
    assert full.stats["compacted_rows"] is None and rows.stats["compacted_rows"] == 2 * (3 + 3 + 2 + 1)
    assert torch.equal(rows.labels, full.labels)
    assert (rows.difference_maps - full.difference_maps).abs().max() <= 1e-4
    assert len(rows.labels.unique()) == 4


def _unet_rows(bb, fn):
    """Rows (run x frame) of every guided UNet evaluation during ``fn``."""
    seen = []
    real = bb.denoised

    def counted(x, step, cond, conditional_only=False):
        seen.append(x.shape[0] * x.shape[1])
        return real(x, step, cond, conditional_only)
    bb.denoised = counted
    try:
        fn()
    finally:
        del bb.denoised
    return sum(seen)


def test_fewer_unet_rows_are_computed(sd):
    bb, inputs, coarse, store = sd
    plan = ModulationSettings().resolve(bb)
    steps = plan.last - plan.t_m + 1
    full = _unet_rows(bb, lambda: _run(bb, inputs, coarse, store, skip_absent_rows=False))
    rows = _unet_rows(bb, lambda: _run(bb, inputs, coarse, store))
    assert full == 8 * 3 * steps  # 4 labels x 2 signs x 3 frames
    assert rows == 2 * (3 + 3 + 2 + 1) * steps


def test_every_label_everywhere_keeps_whole_runs(sd):
    bb, inputs, _, store = sd
    coarse = torch.zeros(3, 4, 8, dtype=torch.long)
    coarse[:, :, 4:] = 1
    res = _run(bb, inputs, coarse, store)
    assert res.stats["compacted_rows"] is None and res.stats["chunks"] == [4]


def test_svd_keeps_whole_runs():
    bb = load_backbone("tiny-svd")
    inputs = prepare_batch(bb, torch.rand(2, 64, 128, 3, generator=torch.Generator().manual_seed(1)))
    coarse = _absent_coarse(2)
    on = _run(bb, inputs, coarse)
    off = _run(bb, inputs, coarse, skip_absent_rows=False)
    assert on.stats["compacted_rows"] is None and on.stats["chunks"] == off.stats["chunks"]
    assert torch.equal(on.labels, off.labels) and torch.equal(on.difference_maps, off.difference_maps)


def test_progress_adds_up_and_host_reads_stay_constant(sd):
    bb, inputs, coarse, store = sd
    calls = []
    modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(max_runs_per_chunk=2),
                   progress=lambda d, t: calls.append((d, t)), reference_store=store)
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] > 0
    counts = {chunk: _count_host_reads(lambda: modulate_batch(
        bb, inputs, coarse, None, FRAME, ModulationSettings(max_runs_per_chunk=chunk), reference_store=store))
        for chunk in (None, 2)}
    assert len(set(counts.values())) == 1 and max(counts.values()) <= 6, counts


def test_row_tables_and_setting_check():
    rows = present_rows([[True, False, True], [False, True, False]], [0, 1, 2, 3])
    assert rows == [(0, 0), (0, 2), (1, 0), (1, 2), (2, 1), (3, 1)]
    assert take_rows(rows, 3, with_reference=False) == rows[:3]
    assert take_rows(rows, 4, with_reference=True) == rows[:2]  # 2 rows + reference rows of frames 0, 2
    assert take_rows(rows, 1, with_reference=True) == rows[:1]  # at least one row
    with pytest.raises(InputError, match="skip_absent_rows"):
        ModulationSettings(skip_absent_rows="yes").check()


def test_presence_benchmark_helpers():
    from benchmarks.label_presence import presence
    from benchmarks.modulation import voronoi_coarse
    from benchmarks.pipeline_flops import presence_coarse

    full = voronoi_coarse(14, 6, 12, 10)
    part = presence_coarse(full, 0.414)
    p = presence(part)
    assert presence(full)["fraction"] == 1.0 and p["labels"] == 10 and p["present"] == round(0.414 * 140)
    assert presence(_absent_coarse()) == {"labels": 4, "present": 9, "full": 12, "fraction": 0.75}


def test_out_of_memory_halves_the_rows_of_a_chunk(sd, monkeypatch):
    from vidseg_core.modulation import rows as rows_mod

    bb, inputs, coarse, store = sd
    real, sizes = rows_mod.run_rows, []

    def flaky(job, x_tm, chunk, with_reference, driver):
        sizes.append(len(chunk))
        if len(sizes) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(job, x_tm, chunk, with_reference, driver)
    full = _run(bb, inputs, coarse, store)
    monkeypatch.setattr(rows_mod, "run_rows", flaky)
    with pytest.warns(RuntimeWarning, match="18 rows ran out of memory.*9 rows per chunk"):
        res = _run(bb, inputs, coarse, store)
    assert sizes == [18, 9, 9] and res.stats["chunks"] == [9, 9] and res.stats["oom_retries"] == 1
    assert torch.equal(res.labels, full.labels) and (res.difference_maps - full.difference_maps).abs().max() <= 1e-4


def test_chunks_of_rows_compute_each_frame_prefix_once(sd):
    """In chunks, the shared prefix of step t_m is computed once per batch frame (by the first chunk that needs
    it) and reused by later chunks; outputs equal whole runs in one chunk."""
    bb, inputs, coarse, store = sd
    full = _run(bb, inputs, coarse, store, skip_absent_rows=False)
    rows = _run(bb, inputs, coarse, store, max_runs_per_chunk=1)  # 3 rows a chunk: 18 rows in 6 chunks
    assert len(rows.stats["chunks"]) == 6
    prefix = rows.stats["prefix"]
    # the first chunk holds frames 0-2 (label 0, +): every later chunk finds its frames' prefixes
    assert prefix["prefix"] == 1 and prefix["reused"] == 5, prefix
    assert torch.equal(rows.labels, full.labels)
    assert (rows.difference_maps - full.difference_maps).abs().max() <= 1e-4


def test_the_store_built_in_the_batch_gives_every_frame_its_prefix(sd, monkeypatch):
    """Store not given: built at t_m in the batch, its reference run's prefix over all batch frames is each
    frame's prefix, so the prefix runs once per batch (on 2·T rows) and every chunk of rows reuses it."""
    from vidseg_core.backbones.diffusers_split import DiffusersSplitter

    bb, inputs, coarse, _ = sd
    full = _run(bb, inputs, coarse, skip_absent_rows=False)
    real, prefix_rows = DiffusersSplitter.prefix, []

    def counted(self, call, rows):
        prefix_rows.append(rows["sample"].shape[0])
        return real(self, call, rows)
    monkeypatch.setattr(DiffusersSplitter, "prefix", counted)
    for kw, chunks in ((dict(reference_pass="store"), 1), (dict(reference_pass="store", max_runs_per_chunk=1), 6)):
        prefix_rows.clear()
        res = _run(bb, inputs, coarse, **kw)
        assert res.stats["reference_pass"] == "store" and len(res.stats["chunks"]) == chunks
        assert prefix_rows == [2 * 3], prefix_rows  # both guidance halves of the 3 frames, once
        assert res.stats["prefix"]["prefix"] == 1 and res.stats["prefix"]["reused"] == chunks, res.stats["prefix"]
        assert torch.equal(res.labels, full.labels)
        assert (res.difference_maps - full.difference_maps).abs().max() <= 1e-4
