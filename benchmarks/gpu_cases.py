"""What ``benchmarks/gpu.py`` measures, case by case: the models, the presence cases, the FLOP counts, the
profile of one quality batch and the host/device synchronisations CUDA reports."""
from __future__ import annotations

import json
import statistics
import time
import warnings
from typing import Dict, Optional

import torch

from benchmarks.timing import time_once


def presence_cases(bb, frames, labels: int, fraction: float, results: dict):
    """``modulate_batch`` alone (the feature pass's reference store given, as the pipeline does) on ``labels``
    Voronoi labels with ``fraction`` of the (label, frame) pairs present: rows skipped vs whole runs.
    Returns ``(cases, inputs, coarse, store)``; each case leaves its labels in ``results``."""
    from benchmarks.modulation import voronoi_coarse
    from benchmarks.pipeline_flops import presence_coarse
    from vidseg_core.features import prepare_batch
    from vidseg_core.modulation import ModulationSettings, modulate_batch
    from vidseg_core.modulation.reference import reference_pass

    inputs = prepare_batch(bb, frames)
    lh, lw = inputs.latent_hw
    coarse = presence_coarse(voronoi_coarse(int(frames.shape[0]), lh // 2, lw // 2, labels), fraction)
    store = reference_pass(bb, inputs)[2]
    size = tuple(int(v) for v in frames.shape[1:3])

    def case(key, skip):
        def fn():
            res = modulate_batch(bb, inputs, coarse, None, size, ModulationSettings(skip_absent_rows=skip),
                                 reference_store=store)
            results[key] = res.labels
        return fn
    return {"mod_rows": case("mod_rows", True), "mod_whole": case("mod_whole", False)}, inputs, coarse, store


def presence_flops(meta, cond_of, T: int, hw, coarse) -> Dict[str, float]:
    """FLOPs per frame of the two presence cases on the meta twin (reference store recorded on meta too)."""
    from benchmarks.modulation import _meta, count
    from vidseg_core.features import BatchInputs
    from vidseg_core.modulation import ModulationSettings, modulate_batch
    from vidseg_core.modulation.reference import reference_pass

    H, W = hw
    lh, lw = H // 8, W // 8
    x = _meta(T, 4, lh, lw)
    inputs = BatchInputs(_meta(T, 3, H, W), x, cond_of(T, lh, lw), x, x)
    m = torch.device("meta")
    store = reference_pass(meta, inputs, ModulationSettings(), device=m, feature_device=m)[2]
    ids = sorted(int(v) for v in torch.unique(coarse))
    return {key: count(lambda skip=skip: modulate_batch(meta, inputs, coarse, ids, (H, W),
                                                         ModulationSettings(skip_absent_rows=skip),
                                                         reference_store=store)) / T
            for key, skip in (("mod_rows", True), ("mod_whole", False))}


# ---------------------------------------------------------------------------------------------- models
def build(family: str, device: torch.device, dtype: torch.dtype, tiny: bool):
    """The backbone: tiny twins (``--tiny``) or the full-size architecture with random weights on ``device``."""
    if tiny:
        from vidseg_core.backbones import load_backbone

        return load_backbone("tiny-sd" if family == "sd21" else "tiny-svd", device=str(device),
                             precision={torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype])
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        if family == "sd21":
            from diffusers import AutoencoderKL, UNet2DConditionModel

            from vidseg_core.backbones.config import SD21Config
            from vidseg_core.backbones.sd21 import CONFIG_DIR, SD21Backbone

            with torch.device(device):
                unet = UNet2DConditionModel.from_config(json.loads((CONFIG_DIR / "unet" / "config.json").read_text()))
                vae = AutoencoderKL.from_config(json.loads((CONFIG_DIR / "vae" / "config.json").read_text()))
            emb = torch.randn(1, 77, unet.config.cross_attention_dim)
            return SD21Backbone("sd21-random", SD21Config(), unet.eval(), vae.eval(), device, dtype,
                                emb).to(device, dtype)
        from vidseg_core.backbones.config import SVDConfig
        from vidseg_core.backbones.svd import SVDBackbone, _build, _finish, real_configs

        cfgs = real_configs()
        with torch.device(device):
            unet, vae, enc = (_build(part, cfg) for part, cfg in zip(("unet", "vae", "image_encoder"), cfgs))
        return SVDBackbone("svd-random", SVDConfig(), _finish(unet, device, dtype), _finish(vae, device, dtype),
                           _finish(enc, device, dtype), device, dtype)


def meta_twin(bb):
    """The same architecture on meta tensors, for FLOP counts: ``(meta backbone, cond_of)``."""
    from benchmarks.modulation import meta_sd, meta_svd

    make = meta_sd if bb.family == "sd" else meta_svd
    return make(dict(bb.unet.config), dict(bb.vae.config))


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: int, log) -> float:
    """FLOP/s of an ``n x n`` matrix product (random operands, median of 10 after warm-up)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = [time_once(lambda: a @ b, device)[3 if device.type == "cuda" else 1] for _ in range(10)]
    rate = 2 * n ** 3 / statistics.median(times)
    log(f"matrix product {n}x{n} {str(dtype).replace('torch.', '')}: {rate / 1e12:.1f} TFLOP/s (median of 10)")
    return rate


# ---------------------------------------------------------------------------------------------- FLOPs
def flop_counts(bb, T: int, hw, stages: dict, chunk: Optional[int]) -> Dict[str, float]:
    """FLOPs per frame of every case on the meta twin (same labels and chunking as the timed quality run)."""
    from benchmarks.features_flops import feature_pass_flops
    from benchmarks.modulation import _meta, count
    from vidseg_core.features import BatchInputs
    from vidseg_core.modulation import ModulationSettings, modulate_batch

    meta, cond_of = meta_twin(bb)
    H, W = hw
    lh, lw = H // 8, W // 8
    fp = feature_pass_flops(meta, cond_of, T, H, W)
    x = _meta(T, 4, lh, lw)
    inputs = BatchInputs(_meta(T, 3, H, W), x, cond_of(T, lh, lw), x, x)
    cfg = meta.config
    steps = len(meta.sigmas()) - 1 - cfg.modulation_step
    U = count(lambda: meta.denoised(x[None], cfg.modulation_step, inputs.cond))
    D = count(lambda: meta.decode(x))
    out = {"features": fp["ours"] / T, "fast": fp["ours"] / T, "unet_eval": U / T}
    q = stages.get("quality")
    if q is not None:
        coarse = q["coarse"][:T]
        ids = sorted(set(q["table"]))
        settings = ModulationSettings(share_attention=bb.device.type == "cpu" or None, max_runs_per_chunk=chunk)
        mod = count(lambda: modulate_batch(meta, inputs, coarse, ids, (H, W), settings))
        out["quality"] = (fp["ours"] + mod) / T
    o = stages.get("oracle")
    if o is not None:
        L = int(torch.unique(o["coarse"][:T]).numel())
        # the oracle: feature pass, then its own reference pass (S evaluations) and 2L passes + decodes
        out["oracle"] = (fp["ours"] + (2 * L + 1) * steps * U + 2 * L * D) / T
    return out


# ---------------------------------------------------------------------------------------------- profile
def profile_quality(bb, frames, clusters: int, device) -> Dict[str, float]:
    """Seconds of one quality batch by part (GPU-synchronised): UNet, encode, decode, difference maps, rest."""
    from benchmarks.pipeline_speed import segment
    from vidseg_core.modulation import folding
    from vidseg_core.pipeline import SegmentSettings

    parts = {"UNet": 0.0, "VAE encode": 0.0, "VAE decode": 0.0, "difference maps": 0.0}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn, key):
        def wrapper(*a, **k):
            sync()
            t = time.perf_counter()
            try:  # the feature step's UNet call ends with CaptureComplete: its time still counts as UNet
                return fn(*a, **k)
            finally:
                sync()
                parts[key] += time.perf_counter() - t
        return wrapper

    # every VAE decode (``decode`` and the modulation's ``decode_clips``) goes through ``_decode_call``
    saved = (bb.denoised, bb.encode, bb._decode_call, folding.difference_map)
    bb.denoised, bb.encode, bb._decode_call = timed(bb.denoised, "UNet"), timed(bb.encode, "VAE encode"), \
        timed(bb._decode_call, "VAE decode")
    folding.difference_map = timed(folding.difference_map, "difference maps")
    try:
        _, total, *_ = time_once(lambda: segment(bb, frames, SegmentSettings(mode="quality", num_clusters=clusters)),
                                 device)
    finally:
        bb.denoised, bb.encode, bb._decode_call, folding.difference_map = saved
        for k in ("denoised", "encode", "_decode_call"):
            bb.__dict__.pop(k, None)
    parts["everything else"] = total - sum(parts.values())
    parts["total"] = total
    return parts


def count_syncs(fn, device) -> Optional[int]:
    """Host/device synchronisations CUDA reports while ``fn()`` runs (``torch.cuda.set_sync_debug_mode("warn")``:
    one warning per synchronising call); None off CUDA."""
    if device.type != "cuda":
        return None
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum("synchroniz" in str(w.message) for w in seen)
