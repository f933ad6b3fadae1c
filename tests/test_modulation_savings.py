"""Exact savings and GPU readiness of masked modulation: each one equals the plain computation.

* the reference trajectory computed once (features + reference store in one pass);
* the reference q/k shared on the GPU path with a fused attention kernel (forced on the CPU);
* the reference-mode rule (repeat / store);
* ± pairs decoded as clips in one VAE call;
* no host reads of tensor values inside the step / layer / chunk loops (counted).
"""
from __future__ import annotations

import pytest
import torch

from vidseg_core.backbones import load_backbone
from vidseg_core.features import capture_features, prepare_batch
from vidseg_core.modulation import ModulationSettings, modulate_batch
from vidseg_core.modulation.memory import choose_reference_mode, estimate_store_bytes
from vidseg_core.modulation.reference import reference_pass

from test_modulation import _coarse  # noqa: E402  (same coarse maps as the modulation tests)

FRAME = (77, 131)


@pytest.fixture(scope="module", params=["tiny-sd", "tiny-svd"])
def setup(request):
    bb = load_backbone(request.param)
    frames = torch.rand(2, 64, 128, 3, generator=torch.Generator().manual_seed(1))
    return bb, prepare_batch(bb, frames), _coarse(2)


def _maps(bb, inputs, coarse, **kw):
    reference_store = kw.pop("reference_store", None)
    return modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(return_difference_maps=True, **kw),
                          reference_store=reference_store)


# ------------------------------------------------------------------ the reference trajectory once
def test_reference_pass_gives_the_same_features_and_the_same_modulation(setup):
    bb, inputs, coarse = setup
    agg, corr = capture_features(bb, inputs)
    agg2, corr2, store = reference_pass(bb, inputs)
    assert torch.equal(agg, agg2) and torch.equal(corr, corr2)  # the very same evaluations
    plan = ModulationSettings().resolve(bb)
    steps = range(plan.t_m, plan.last + 1)
    assert set(store.qk) == {(s, l) for s in steps for l in plan.injected}
    assert set(store.latents) == {s for s in steps if plan.blends(s)} and torch.equal(store.x_tm, inputs.x_start)
    assert store.nbytes() == estimate_store_bytes(bb, plan, 2, inputs.latent_hw,
                                                  getattr(getattr(inputs.cond, "context", None), "shape", (0, 1))[1])
    for share in (None, False):
        plain = _maps(bb, inputs, coarse, share_attention=share)
        given = _maps(bb, inputs, coarse, share_attention=share, reference_store=store)
        assert plain.stats["reference_pass"] == "repeat" and plain.stats["chunks"] == [7]
        assert given.stats["reference_pass"] == "store" and given.stats["reference_given"]
        assert given.stats["chunks"] == [6] and "store_bytes" not in given.stats  # no reference run at all
        assert torch.equal(given.labels, plain.labels)
        assert (given.difference_maps - plain.difference_maps).abs().max() <= 1e-4  # batch-size rounding


def test_a_store_recorded_for_other_settings_is_not_used(setup):
    bb, inputs, coarse = setup
    _, _, store = reference_pass(bb, inputs)
    res = _maps(bb, inputs, coarse, step=bb.config.modulation_step + 1, reference_store=store)
    assert not res.stats["reference_given"] and res.stats["reference_pass"] == "repeat"


def test_pipeline_quality_mode_hands_the_feature_pass_reference_to_the_modulation(monkeypatch):
    from vidseg_core import pipeline
    from vidseg_core.upsample import modulation as up_mod

    bb = load_backbone("tiny-sd")
    frames = torch.rand(3, 64, 128, 3, generator=torch.Generator().manual_seed(7))
    seen = []
    real = up_mod.modulate_batch

    def spy(*args, **kwargs):
        res = real(*args, **kwargs)
        seen.append(res.stats)
        return res
    monkeypatch.setattr(up_mod, "modulate_batch", spy)
    settings = pipeline.SegmentSettings(num_clusters=3, batch_size=3, n_init=2)
    labels, _ = pipeline.segment_video(bb, frames, settings)
    assert seen and all(s.get("reference_given") or s.get("skipped") for s in seen)
    # the same labels as the features and the modulation computed separately (the reference twice)
    monkeypatch.setattr(pipeline.VideoSegmenter, "_features",
                        lambda self, fr, with_reference=False: (lambda i: (i, *capture_features(self.backbone, i),
                                                                           None))(prepare_batch(bb, fr)))
    twice, _ = pipeline.segment_video(bb, frames, settings)
    assert torch.equal(labels, twice)


# ------------------------------------------------------------------ shared q/k, fused kernel (the GPU path)
def test_fused_shared_qk_equals_unshared_and_probabilities(setup):
    bb, inputs, coarse = setup
    off = _maps(bb, inputs, coarse, share_attention=False)
    for mode in ("fused", "probabilities", "auto"):
        res = _maps(bb, inputs, coarse, share_attention=mode)
        assert torch.equal(res.labels, off.labels), mode
        assert (res.difference_maps - off.difference_maps).abs().max() <= 1e-4, mode
    _, _, store = reference_pass(bb, inputs)
    res = _maps(bb, inputs, coarse, share_attention="fused", reference_store=store)
    assert torch.equal(res.labels, off.labels) and (res.difference_maps - off.difference_maps).abs().max() <= 1e-4


def test_fused_path_projects_reference_qk_only_and_keeps_sdpa(setup, monkeypatch):
    """Fused path: the injected layers project q for one run's rows only (not 7 runs' and then overwrite them),
    the attention is scaled_dot_product_attention, and no probability matrix is materialised."""
    from vidseg_core.modulation import shared_attention as sa

    bb, inputs, coarse = setup
    plan = ModulationSettings().resolve(bb)
    modules = bb.attention_layers()

    def q_rows(share):
        rows = {l: [] for l in plan.injected}
        handles = [modules[l].to_q.register_forward_hook(lambda m, i, o, l=l: rows[l].append(i[0].shape[0]))
                   for l in plan.injected]
        try:
            _maps(bb, inputs, coarse, share_attention=share, share_prefix=False)
        finally:
            for h in handles:
                h.remove()
        return rows

    def no_p(*a, **kw):
        raise AssertionError("probability matrix materialised on the fused path")
    plain = q_rows(False)
    monkeypatch.setattr(sa, "_probabilities_times_values", no_p)
    sdpa = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, k, v, *a, **kw: (sdpa.append(q.shape[0]), real(q, k, v, *a, **kw))[1])
    fused = q_rows("fused")
    for layer in plan.injected:
        assert len(set(fused[layer])) == 1 and set(plain[layer]) == {7 * fused[layer][0]}, layer
    assert sdpa  # the fused kernel is what computes the attention


# ------------------------------------------------------------------ reference-mode rule
def test_reference_mode_rule():
    GB = 2 ** 30
    common = dict(store_bytes=4 * GB, run_bytes=GB, host_budget=64 * GB)
    assert choose_reference_mode("auto", True, 20, 3, device_budget=GB, **common) == ("store", "device")
    assert choose_reference_mode("auto", False, 20, 21, device_budget=100 * GB, **common) == ("repeat", None)
    assert choose_reference_mode("auto", False, 20, 11, device_budget=100 * GB, **common) == ("store", "device")
    assert choose_reference_mode("auto", False, 20, 5, device_budget=5 * GB, **common) == ("store", "host")
    assert choose_reference_mode("auto", False, 20, 1, device_budget=None, **common) == ("store", "device")
    assert choose_reference_mode("auto", False, 20, 5, device_budget=5 * GB, store_bytes=100 * GB, run_bytes=GB,
                                 host_budget=8 * GB) == ("repeat", None)
    assert choose_reference_mode("repeat", True, 20, 3, device_budget=GB, **common) == ("repeat", None)


def test_forced_repeat_ignores_a_given_store(setup):
    bb, inputs, coarse = setup
    _, _, store = reference_pass(bb, inputs)
    st = ModulationSettings(reference_pass="repeat", max_runs_per_chunk=3)
    res = modulate_batch(bb, inputs, coarse, None, FRAME, st, reference_store=store)
    assert res.stats["reference_pass"] == "repeat" and res.stats["chunks"] == [3, 3, 3]


# ------------------------------------------------------------------ decode
def test_decode_clips_equals_decode_per_clip(setup):
    bb, inputs, _ = setup
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 3, 4, *inputs.latent_hw, generator=g)
    one = torch.stack([bb.decode(z[0]), bb.decode(z[1])])
    for max_frames in (None, 1, 2, 4, 6):
        both = bb.decode_clips(z, max_frames)
        assert both.shape == one.shape and (both - one).abs().max() <= 1e-5, max_frames


# ------------------------------------------------------------------ no host reads inside the loops
_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


def _count_host_reads(fn):
    counts = {"n": 0}
    saved = {name: getattr(torch.Tensor, name) for name in _READS}

    def wrap(name):
        real = saved[name]

        def counted(self, *a, **kw):
            counts["n"] += 1
            return real(self, *a, **kw)
        return counted
    for name in _READS:
        setattr(torch.Tensor, name, wrap(name))
    real_equal = torch.equal
    torch.equal = lambda a, b: (counts.__setitem__("n", counts["n"] + 1), real_equal(a, b))[1]
    try:
        fn()
    finally:
        for name, real in saved.items():
            setattr(torch.Tensor, name, real)
        torch.equal = real_equal
    return counts["n"]


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-svd"])
def test_host_reads_do_not_grow_with_steps_frames_or_chunks(name):
    """``.item() / .tolist() / .cpu() / .numpy() / bool(t) / torch.equal`` calls during modulate_batch: a constant
    number per batch (input checks, the present-label tables, the final label map), none per step, layer,
    frame or chunk."""
    bb = load_backbone(name)
    counts = {}
    start = bb.config.modulation_step
    # one factor at a time from a base case (a full cross product took ~1 min on tiny-svd); for SD also
    # share_attention=None, which resolves to "fused" for these few runs on a CPU
    base = dict(T=2, step=start, chunk=None, share=False)
    variants = [base, dict(base, T=3), dict(base, step=start + 1), dict(base, chunk=3), dict(base, share="fused")]
    if name == "tiny-sd":
        variants.append(dict(base, share=None))
    prepared = {}
    for v in variants:
        T = v["T"]
        if T not in prepared:
            frames = torch.rand(T, 64, 128, 3, generator=torch.Generator().manual_seed(T))
            inputs = prepare_batch(bb, frames)
            coarse = _coarse(T)
            _, _, store = reference_pass(bb, inputs)
            modulate_batch(bb, inputs, coarse, None, FRAME)  # warm the per-size caches (Lanczos weights)
            prepared[T] = (inputs, coarse, store)
        inputs, coarse, store = prepared[T]
        st = ModulationSettings(step=v["step"], max_runs_per_chunk=v["chunk"], share_attention=v["share"])
        counts[tuple(v.values())] = _count_host_reads(
            lambda: modulate_batch(bb, inputs, coarse, None, FRAME, st, reference_store=store))
    assert len(set(counts.values())) == 1, counts
    assert max(counts.values()) <= 6, counts  # coarse / ids / present tables / labels to the host


# ------------------------------------------------------------------ CPU memory
def test_feed_forward_by_rows_is_exact_and_restored(setup):
    from vidseg_core.cpu_memory import feed_forward_by_rows

    bb, inputs, _ = setup
    x = inputs.x_start[None].expand(3, *inputs.x_start.shape).clone()
    ffs = [m.ff for m in bb.unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    seen = []
    handle = ffs[0].net[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    rows = 2 * x.shape[1]
    try:
        with torch.inference_mode():
            plain = bb.denoised(x, bb.config.modulation_step, inputs.cond)
            with feed_forward_by_rows(bb.unet, rows):
                with feed_forward_by_rows(bb.unet, 2):  # nested (the compacted rows inside a batch): restored
                    bb.denoised(x, bb.config.modulation_step, inputs.cond)
                chunked = bb.denoised(x, bb.config.modulation_step, inputs.cond)
    finally:
        handle.remove()
    assert seen == [3 * rows] + [2] * (3 * rows // 2) + [rows] * 3  # the whole batch, then slices of 2, of 2·T
    assert (chunked - plain).abs().max() <= 1e-5
    assert all("forward" not in ff.__dict__ and "_vidseg_ff_rows" not in ff.__dict__ for ff in ffs)


def test_use_huge_pages_respects_the_environment(monkeypatch):
    from vidseg_core.cpu_memory import use_huge_pages

    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    assert use_huge_pages() and __import__("os").environ["THP_MEM_ALLOC_ENABLE"] == "1"
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    assert not use_huge_pages()
