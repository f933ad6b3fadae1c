"""FLOPs per frame of the WHOLE pipeline on the real SD 2.1 / SVD architectures (meta tensors, no weights),
the same scope on both sides of every ratio.

    python benchmarks/pipeline_flops.py [--frames 14] [--labels 10] [--height 448] [--width 832] [--chunks 7]
                                        [--presence 0.414] [--arch "SD 2.1"]

Counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
convolutions; attention through the math SDPA kernel so that it is counted)
by running the project's own functions on a meta backbone built from the
shipped configs (``benchmarks/modulation.py``):

* **authors' quality mode** -- ``E + (2K + 1)·(S·U + D)``: their reference pass
  is also their feature pass and is decoded, then 2K passes (one per label and
  sign) each run S guided UNet evaluations ``U`` from t_m and a decode ``D``;
  ``E`` = the VAE encode.  For SD 2.1 at K = 10: ``E + 21(3U + D)``.
* **ours, quality** -- the pipeline's path: encode + ``reference_pass`` (the
  feature pass and the reference's q/k / latents in ONE trajectory: the feature
  step's evaluation conditional-only and stopped after block 8, then one guided
  evaluation there to record its q/k) + ``modulate_batch`` given that store (no
  reference run in any chunk), on each path a device runs: the CPU default
  (attention probabilities of the injected layers shared), the CUDA default
  (fused: q/k projected once, one SDPA call per run), no sharing, and chunks of
  ``--chunks`` runs (store from the feature pass; and, forced, the reference
  repeated in every chunk after a plain feature pass).
* **ours, fast** -- encode + our feature pass + the guided filter (its
  element-wise work is not in FlopCounterMode's count; see ``modulation.py``'s
  all-ops count: about 0.25 GFLOP/frame, negligible here).

The conditioning encoders (SVD's CLIP image tower on one frame) are left out on
every side.  Labels: K Voronoi cells present in every frame (the worst case
for the modulation: no (label, frame) row can be skipped).  ``--presence p``
also counts SD 2.1 on a coarse map where only the fraction ``p`` of the
(label, frame) pairs is present (label 0 everywhere, each other label in a
window of frames; the absent cells go to label 0), with the absent rows skipped
(``skip_absent_rows``, the default) and with whole runs, both at that presence
(``benchmarks/label_presence.py`` measures ``p`` on the benchmark clips).  SVD
always computes whole runs (its temporal layers mix frames).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.features_flops import feature_pass_flops  # noqa: E402
from benchmarks.modulation import _meta, count, meta_sd, meta_svd, voronoi_coarse  # noqa: E402
from vidseg_core.features import BatchInputs  # noqa: E402
from vidseg_core.modulation import ModulationSettings, modulate_batch  # noqa: E402
from vidseg_core.modulation.reference import reference_pass  # noqa: E402
from vidseg_core.modulation.runner import estimate_run_bytes  # noqa: E402

#: memory of one H200 (about 139 GiB); used only to say which chunk size the
#: memory-based chunking would pick there
H200_BYTES = 139 * 2 ** 30


def chunk_runs_on(bb, frames: int, latent_hw, device_bytes: int, dtype_bytes: int = 2) -> int:
    """Runs per chunk ``modulate_batch`` would pick with ``device_bytes`` free (80 % of it, weights aside), at
    ``dtype_bytes`` per element (bf16 = 2)."""
    weights = sum(p.numel() for m in bb.modules().values() if m is not None for p in m.parameters()) * dtype_bytes
    per_run = estimate_run_bytes(bb, frames, latent_hw) * dtype_bytes // 4  # the meta backbone is float32
    return int(0.8 * (device_bytes - weights) // max(1, per_run))


ARCHITECTURES = {"SD 2.1": meta_sd, "SVD": meta_svd}


def presence_coarse(coarse: torch.Tensor, fraction: float) -> torch.Tensor:
    """``coarse [T,h,w]`` (labels 0..K-1 in every frame) with only ``fraction`` of the (label, frame) pairs present:
    label 0 in every frame, label ``l`` in the frames ``(l + i) % T`` for ``i < n_l`` (``n_l`` as even as possible),
    its cells elsewhere given to label 0."""
    T, K = coarse.shape[0], int(coarse.max()) + 1
    target = min(K * T, max(T + K - 1, round(fraction * K * T)))
    rest = target - T
    out = coarse.clone()
    for l in range(1, K):
        n = rest // (K - 1) + (1 if l - 1 < rest % (K - 1) else 0)
        keep = {(l + i) % T for i in range(n)}
        for f in range(T):
            if f not in keep:
                out[f][out[f] == l] = 0
    return out


def run(frames: int = 14, labels: int = 10, height: int = 448, width: int = 832, chunks: Sequence[int] = (7,),
        archs: Sequence[str] = tuple(ARCHITECTURES), log=print, presence: Sequence[float] = ()) -> dict:
    """``{arch: {"setting", "authors", "fast", "paths": {name: FLOP/frame}, "h200_runs"}}`` (FLOPs per frame)."""
    T, K, H, W = frames, labels, height, width
    lh, lw = H // 8, W // 8
    coarse = voronoi_coarse(T, lh // 2, lw // 2, K)
    ids = list(range(K))
    log(f"== whole-pipeline FLOPs per frame: real architectures (meta tensors), {W}x{H}, T = {T}, K = {K} labels")
    result = {}
    for name in archs:
        bb, cond_of = ARCHITECTURES[name]()
        cfg = bb.config
        fp = feature_pass_flops(bb, cond_of, T, H, W)
        steps = len(bb.sigmas()) - 1 - cfg.modulation_step
        x = _meta(T, 4, lh, lw)
        inputs = BatchInputs(_meta(T, 3, H, W), x, cond_of(T, lh, lw), x, x)
        U = count(lambda: bb.denoised(x[None], cfg.modulation_step, inputs.cond))
        D = count(lambda: bb.decode(x))
        authors = fp["encode"] + (2 * K + 1) * (steps * U + D)

        meta = torch.device("meta")
        made = {}

        def reference():  # the pipeline's quality path: features + the reference's q/k / latents in ONE trajectory
            made["store"] = reference_pass(bb, inputs, ModulationSettings(), device=meta, feature_device=meta)[2]

        ref = fp["encode"] + count(reference)

        def mod(store=None, coarse_map=coarse, **kw):
            return count(lambda: modulate_batch(bb, inputs, coarse_map, ids, (H, W), ModulationSettings(**kw),
                                                reference_store=store))

        store = made["store"]
        paths = {"CPU default (reference once, attention probabilities shared, one chunk)":
                 ref + mod(store, share_attention="probabilities"),
                 "CUDA default (reference once, fused q/k sharing, one chunk)": ref + mod(store, share_attention="fused"),
                 "no sharing (reference once, one chunk)": ref + mod(store, share_attention=False)}
        for c in chunks:
            paths[f"CUDA, chunks of {c} runs, reference from the feature pass"] = ref + mod(
                store, share_attention="fused", max_runs_per_chunk=c)
            paths[f"CUDA, chunks of {c} runs, reference repeated (forced)"] = fp["ours"] + mod(
                share_attention="fused", max_runs_per_chunk=c, reference_pass="repeat")
        for p in (presence if bb.family == "sd" else ()):
            part = presence_coarse(coarse, p)
            real = float(torch.stack([(part == i).flatten(1).any(1) for i in range(K)]).float().mean())
            for share in ("probabilities", "fused"):
                where = "CPU" if share == "probabilities" else "CUDA"
                for skip in (False, True):
                    what = "absent rows skipped" if skip else "whole runs"
                    paths[f"{where} default, {real:.3f} of the pairs present, {what}"] = ref + mod(
                        store, part, share_attention=share, skip_absent_rows=skip)
        quality = {k: v / T for k, v in paths.items()}
        h200 = chunk_runs_on(bb, T, (lh, lw), H200_BYTES)
        tf = 1e12
        log(f"  {name}: U = {U / tf:.3f} TFLOP (guided, {2 * T} rows), D = {D / tf:.3f}, E = {fp['encode'] / tf:.3f}, "
            f"{steps} modulation steps; authors {authors / T / tf:.1f} TFLOP/frame; fast {fp['ours'] / T / tf:.2f}")
        for k, v in quality.items():
            log(f"    quality, {k}: {v / tf:.1f} TFLOP/frame ({authors / T / v:.3f}x fewer than the authors')")
        log(f"    an H200 (about 139 GiB, bf16) fits about {h200} runs per chunk by estimate_run_bytes "
            f"({2 * K + 1} needed for one chunk)")
        result[name] = {"setting": {"frames": T, "labels": K, "height": H, "width": W, "steps": steps},
                        "unet_eval": U / T, "decode": D / T, "encode": fp["encode"] / T, "authors": authors / T,
                        "fast": fp["ours"] / T, "features_full": fp["full"] / T, "paths": quality, "h200_runs": h200}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--labels", type=int, default=10)
    ap.add_argument("--height", type=int, default=448)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--chunks", type=int, nargs="*", default=[7])
    ap.add_argument("--presence", type=float, nargs="*", default=[],
                    help="fractions of present (label, frame) pairs to count SD 2.1 at (rows skipped vs whole runs)")
    ap.add_argument("--arch", nargs="*", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    args = ap.parse_args(argv)
    with torch.inference_mode():
        run(args.frames, args.labels, args.height, args.width, args.chunks, args.arch, presence=args.presence)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
