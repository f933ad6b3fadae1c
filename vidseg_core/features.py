"""Diffusion feature extraction (paper §4.1; docs/design/authors_code.md#feature-capture, #order-of-operations-and-batching).

Per batch of B frames, exactly as the authors' reference pass:

1. re-seed (the authors run ``seed_everything(1)`` at the start of every batch);
2. resize frames down to multiples of 64 and VAE-encode them (posterior sample);
3. build the batch's conditioning (SD: empty prompt; SVD: the batch's first frame);
4. noise the clean latent directly to t_m (``x = z0 + σ_{t_m} ε``: t_inv = t_m);
5. denoise from t_m to the end, capturing at the feature step t_k (the last one)
   the spatial self-attention queries of decoder blocks 6, 7, 8 (conditional
   half); the output of the evaluation at t_k is never used, so it runs the
   conditional half alone and stops right after block 8's queries (exact: the
   halves are independent rows of the UNet batch);
6. F̃ = mean of the three blocks' queries (summed 8, 7, 6 then divided by 3, the
   authors' float order), each token divided by its max-abs value over channels;
   CBR uses block 7's queries unnormalised.

Memory is bounded by the batch: each batch's features go to the CPU in a
compact dtype as soon as they are captured.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Tuple

import torch

from .backbones.attention import CaptureComplete, CaptureQueries, LayerId
from .backbones.base import Backbone
from .batching import Batch, plan_batches
from .errors import InputError
from .video_features import VideoFeatures

#: progress(done_frames, total_frames) -> None; may raise to cancel
Progress = Callable[[int, int], None]


@dataclass
class BatchInputs:
    """What every pass of one batch starts from (shared by features and modulation)."""

    prepared: torch.Tensor  # [T,3,h64,w64] in -1..1 on the device
    z0: torch.Tensor  # clean latents [T,4,h,w]
    cond: Any  # backbone conditioning
    noise: torch.Tensor  # ε [T,4,h,w]
    x_start: torch.Tensor  # z0 + σ_{t_m} ε

    @property
    def latent_hw(self) -> Tuple[int, int]:
        return int(self.z0.shape[-2]), int(self.z0.shape[-1])


@torch.inference_mode()
def prepare_batch(backbone: Backbone, frames: torch.Tensor, seed: Optional[int] = None) -> BatchInputs:
    """Steps 1-4 above for frames ``[T,H,W,3]`` in 0..1 (RNG order as the authors: encode, condition, noise)."""
    gen = backbone.generator(seed)
    prepared = backbone.prepare_frames(frames)
    z0 = backbone.encode(prepared, gen)
    cond = backbone.condition(prepared, gen)
    noise = backbone.randn(tuple(z0.shape), gen)
    x_start = backbone.add_noise(z0, backbone.config.modulation_step, noise)
    return BatchInputs(prepared, z0, cond, noise, x_start)


def aggregate_queries(queries) -> torch.Tensor:
    """F̃: element-wise mean of the blocks' queries, then per-token max-abs normalisation (docs/design/authors_code.md#feature-capture).

    The mean is computed as the authors' float32 ``torch.mean`` over their stack of blocks 8, 7, 6 is: the
    queries summed one after another *in the order given*, then divided by their number.  Float addition
    is not associative, so the order matters (up to a few ulp per value, enough to move a KMeans
    solution); :func:`features_from_capture` passes the deepest block first, as the authors do.
    """
    qs = [q.float() for q in queries]
    if not qs:
        raise InputError("No feature blocks to aggregate.", "Give at least one feature block (e.g. 6, 7, 8).")
    total = qs[0].clone()
    for q in qs[1:]:
        total.add_(q)
    mean = total / len(qs)
    return mean / mean.abs().amax(-1, keepdim=True).clamp_min(1e-12)


def aggregation_order(blocks) -> list:
    """The order the feature blocks are summed in: deepest first (the authors' 8, 7, 6)."""
    return sorted((int(b) for b in blocks), reverse=True)


def feature_layers(config) -> set:
    """The layers whose queries make the features: spatial self-attention of the feature blocks and the
    correspondence block."""
    return {LayerId(b, "spatial_self") for b in tuple(config.feature_blocks) + (config.correspondence_block,)}


def evaluate_feature_step(backbone: Backbone, x: torch.Tensor, cond, capture: CaptureQueries) -> None:
    """The UNet evaluation at t_k, run only for ``capture``: conditional half alone, ended by ``capture``
    (``stop_when_done=True``) right after its last layer.  ``x`` is the latent entering step t_k."""
    try:
        with backbone.hooks(capture):
            backbone.denoised(x, backbone.config.feature_step, cond, conditional_only=True)
    except CaptureComplete:
        pass


def feature_capture(config, stop_early: bool = True, device=None) -> CaptureQueries:
    """The hook capturing the feature layers' conditional queries at the feature step (float32, on ``device``;
    None: the CPU)."""
    return CaptureQueries(feature_layers(config), steps={config.feature_step}, half=1, run=0, dtype=torch.float32,
                          device=torch.device("cpu") if device is None else device, stop_when_done=stop_early)


def features_from_capture(capture: CaptureQueries, inputs: BatchInputs, config,
                          store_dtype: torch.dtype = torch.float16) -> Tuple[torch.Tensor, torch.Tensor]:
    """Step 6 above from a filled :func:`feature_capture`: ``(aggregated, correspondence)`` ``[T,h,w,C]``."""
    layers = feature_layers(config)
    missing = [l for l in layers if (config.feature_step, l) not in capture.captured]
    if missing:
        raise RuntimeError(f"feature capture missed layers {missing}: the backbone does not expose them")
    lh, lw = inputs.latent_hw
    t = int(inputs.z0.shape[0])

    def grid(q):  # decoder blocks 6-8 work at latent / 2 = frame / 16
        return q.reshape(t, lh // 2, lw // 2, q.shape[-1])

    step = config.feature_step
    agg = aggregate_queries([capture.captured[(step, LayerId(b, "spatial_self"))]
                             for b in aggregation_order(config.feature_blocks)])
    corr = capture.captured[(step, LayerId(config.correspondence_block, "spatial_self"))]
    return grid(agg).to(store_dtype), grid(corr).to(store_dtype)


@torch.inference_mode()
def capture_features(backbone: Backbone, inputs: BatchInputs,
                     store_dtype: torch.dtype = torch.float16,
                     stop_early: bool = True, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Steps 5-6 above: the reference trajectory from t_m to t_k with the queries captured.

    ``stop_early`` evaluates the UNet at t_k on the conditional half only and
    ends it after the last captured layer (:func:`evaluate_feature_step`; same
    features, less work; the authors run the whole guided evaluation).
    Returns ``(aggregated [T,h,w,C], correspondence [T,h,w,C])`` on ``device`` (None: the CPU, for storage;
    the pipeline passes the backbone's device so the features go from capture to the KNN and CBR without
    a round trip through the host).
    (Quality mode computes the features and the modulation's reference in one
    trajectory: :func:`vidseg_core.modulation.reference.reference_pass`.)
    """
    cfg = backbone.config
    capture = feature_capture(cfg, stop_early, device)
    x = inputs.x_start[None]
    if stop_early:
        if cfg.feature_step > cfg.modulation_step:
            x = backbone.denoise(x, inputs.cond, cfg.modulation_step, end_step=cfg.feature_step - 1)
        evaluate_feature_step(backbone, x, inputs.cond, capture)
    else:
        with backbone.hooks(capture):
            backbone.denoise(x, inputs.cond, cfg.modulation_step, end_step=cfg.feature_step)
    return features_from_capture(capture, inputs, cfg, store_dtype)


def extract_batch_features(backbone: Backbone, frames: torch.Tensor, seed: Optional[int] = None,
                           store_dtype: torch.dtype = torch.float16) -> Tuple[torch.Tensor, torch.Tensor]:
    """Features of one batch of frames ``[T,H,W,3]``: ``(aggregated, correspondence)`` ``[T,h,w,C]`` on the CPU."""
    return capture_features(backbone, prepare_batch(backbone, frames, seed), store_dtype)


def iter_batch_features(backbone: Backbone, read: Callable[[int, int], torch.Tensor], num_frames: int,
                        batch_size: Optional[int] = None, seed: Optional[int] = None,
                        store_dtype: torch.dtype = torch.float16) -> Iterator[Tuple[Batch, torch.Tensor, torch.Tensor]]:
    """Yield ``(batch, aggregated, correspondence)`` per batch (all B frames of the batch).

    ``read(start, stop)`` returns frames ``[n,H,W,3]``; only one batch of frames
    and features is alive at a time.  The caller keeps ``batch.written``.
    """
    for batch in plan_batches(num_frames, backbone.config.batch_size if batch_size is None else batch_size):
        frames = read(batch.start, batch.stop)
        agg, corr = extract_batch_features(backbone, frames, seed, store_dtype)
        yield batch, agg, corr


def extract_features(backbone: Backbone, frames, batch_size: Optional[int] = None, seed: Optional[int] = None,
                     store_dtype: torch.dtype = torch.float16, progress: Optional[Progress] = None) -> VideoFeatures:
    """Features of a whole video.

    ``frames`` is ``[N,H,W,3]`` (torch or numpy; float in 0..1 or uint8 0..255, see
    :func:`~vidseg_core.video_io.frames_from_tensor`) or a :class:`~vidseg_core.video_io.FrameSource`.
    """
    from .validation import check_batch_size, check_seed

    batch_size, seed = check_batch_size(batch_size), check_seed(seed)
    if not hasattr(frames, "read"):
        from .video_io import frames_from_tensor

        tensor = frames_from_tensor(frames)
        n, height, width = tensor.shape[0], tensor.shape[1], tensor.shape[2]

        def read(a, b):
            return tensor[a:b]
    else:
        n = len(frames)
        if n < 1:
            raise InputError("The video has no frames.", "Give at least one frame.")
        height, width = frames.frame_size
        read = frames.read
    work = backbone.work_size(height, width)
    agg_all = corr_all = None
    t0 = time.perf_counter()
    for batch, agg, corr in iter_batch_features(backbone, read, n, batch_size, seed, store_dtype):
        if agg_all is None:
            agg_all = torch.empty((n,) + tuple(agg.shape[1:]), dtype=store_dtype)
            corr_all = torch.empty((n,) + tuple(corr.shape[1:]), dtype=store_dtype)
        off = batch.write_offset
        agg_all[batch.write_start:batch.stop] = agg[off:]
        corr_all[batch.write_start:batch.stop] = corr[off:]
        if progress is not None:
            progress(batch.stop, n)
    meta = {
        "batch_size": backbone.config.batch_size if batch_size is None else batch_size,
        "seed": backbone.config.seed if seed is None else seed,
        "feature_step": backbone.config.feature_step,
        "modulation_step": backbone.config.modulation_step,
        "feature_blocks": list(backbone.config.feature_blocks),
        "correspondence_block": backbone.config.correspondence_block,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return VideoFeatures(agg_all, corr_all, (height, width), work, backbone.name, meta)
