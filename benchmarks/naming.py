"""What naming the regions adds to a run: FLOPs and time per frame against the feature pass, and memory.

    python benchmarks/naming.py [--words 150] [--frames 14] [--height 448] [--width 832] [--time-frames 2]
    python benchmarks/naming.py --device cuda        # also times a real-size SD 2.1 (random weights) on a GPU

1. FLOPs on the REAL SD 2.1 architecture (meta tensors, no weights): the feature pass (as fast mode runs
   it: encode + UNet from t_m to t_k, the last evaluation conditional-only and stopped after block 8)
   against naming's per-frame work (each kept query against each word's key in the five cross-attention
   layers, :func:`vidseg_core.naming.cross_attention.word_probabilities`) and its once-per-video text
   encoding.  The feature pass is a lower bound of fast mode's cost, so the ratio printed is an upper bound
   of naming's share of fast mode.
2. Memory: the kept queries per frame (held for one batch) and the per-video accumulators.
3. Time on this machine's CPU: naming's per-frame maps at the real shapes (random queries and keys).
4. With ``--device cuda``: the fast-mode feature pass of a real-size SD 2.1 with random weights, with and
   without naming, per frame (medians of ``--repeats`` runs).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.features_flops import feature_pass_flops  # noqa: E402
from benchmarks.modulation import _meta, count, meta_sd  # noqa: E402
from vidseg_core.naming.capture import naming_layers, query_bytes_per_frame  # noqa: E402
from vidseg_core.naming.cross_attention import LayerKeys, layer_grid, word_probabilities  # noqa: E402

TEXT_CONFIG = ROOT / "vidseg_core" / "backbones" / "configs" / "sd21" / "text_encoder" / "config.json"


def _shapes(bb, lh, lw):
    """Layer -> (tokens, channels, heads) of the naming layers at latent ``lh x lw``."""
    mods = bb.attention_layers()
    return {layer: (layer_grid(layer, (lh, lw))[0] * layer_grid(layer, (lh, lw))[1], mods[layer].to_q.out_features,
                    mods[layer].heads) for layer in naming_layers(bb.config)}


def naming_inputs(bb, T, lh, lw, words, device="meta", dtype=torch.float32):
    shapes = _shapes(bb, lh, lw)
    q = {layer: torch.randn(T, n, c, device=device, dtype=dtype) if device != "meta" else _meta(T, n, c)
         for layer, (n, c, _) in shapes.items()}
    k = {layer: LayerKeys(torch.randn(words, c, device=device) if device != "meta" else _meta(words, c), h,
                          (c // h) ** -0.5) for layer, (n, c, h) in shapes.items()}
    return q, k


def text_flops(words: int, tokens: int = 2) -> float:
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = {k: v for k, v in json.loads(TEXT_CONFIG.read_text()).items() if k not in ("architectures", "model_type")}
    with torch.device("meta"):
        te = CLIPTextModel(CLIPTextConfig(**cfg))
    ids = torch.zeros(words, 2 + tokens, dtype=torch.long, device="meta")
    return count(lambda: te(input_ids=ids))


def flops(words, T, H, W, log=print) -> dict:
    bb, cond_of = meta_sd()
    lh, lw = H // 8, W // 8
    feat = feature_pass_flops(bb, cond_of, T, H, W)["ours"] / T
    q, k = naming_inputs(bb, T, lh, lw, words)
    grid = (lh // 2, lw // 2)
    maps = count(lambda: word_probabilities(q, k, (lh, lw), grid)) / T
    text = text_flops(words)
    qbytes = query_bytes_per_frame(bb, (H, W), 2)
    log(f"== SD 2.1 (real architecture, meta tensors), {W}x{H}, batch of {T} frames, {words} words")
    log(f"  feature pass (fast mode's UNet work): {feat / 1e12:.3f} TFLOP/frame")
    log(f"  naming maps: {maps / 1e9:.3f} GFLOP/frame = {100 * maps / feat:.3f}% of the feature pass "
        f"(layers {', '.join(str(l) for l in q)})")
    log(f"  vocabulary encoding, once per video: {text / 1e9:.1f} GFLOP (2-token words) = "
        f"{text / feat:.3f} frames' feature pass")
    log(f"  memory: kept queries {qbytes / 2**20:.2f} MiB/frame (fp16, one batch: {T * qbytes / 2**20:.1f} MiB); "
        f"word maps {grid[0] * grid[1] * words * 4 / 2**20:.2f} MiB/frame (fp32, one batch); "
        f"per video: labels x {words} sums ({words * 4} bytes a label)")
    return {"feature_tflop_per_frame": feat / 1e12, "naming_gflop_per_frame": maps / 1e9, "text_gflop": text / 1e9,
            "query_bytes_per_frame": qbytes}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_time(words, T, H, W, repeats=3, log=print) -> float:
    bb, _ = meta_sd()
    lh, lw = H // 8, W // 8
    q, k = naming_inputs(bb, T, lh, lw, words, device="cpu", dtype=torch.float16)
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        word_probabilities(q, k, (lh, lw), (lh // 2, lw // 2))
        best.append((time.perf_counter() - t) / T)
    best.sort()
    log(f"  naming maps on the CPU ({cpu_name()}, {torch.get_num_threads()} threads): "
        f"{1e3 * best[len(best) // 2]:.1f} ms/frame (median of {repeats}, {T} frames)")
    return best[len(best) // 2]


def gpu_time(words, T, H, W, repeats=3, log=print) -> dict:
    """Fast-mode feature pass of a real-size SD 2.1 with random weights, with and without naming."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from vidseg_core.backbones.config import SD21Config
    from vidseg_core.backbones.sd21 import SD21Backbone, tiny_word_ids
    from vidseg_core.features import capture_features, prepare_batch
    from vidseg_core.naming.segmenter import NamingSegmenter, NamingSettings
    from vidseg_core.naming.vocabulary import load_vocabulary
    from vidseg_core.pipeline import SegmentSettings

    d = ROOT / "vidseg_core" / "backbones" / "configs" / "sd21"
    unet = UNet2DConditionModel.from_config(json.loads((d / "unet" / "config.json").read_text()))
    vae = AutoencoderKL.from_config(json.loads((d / "vae" / "config.json").read_text()))
    cfg = {k: v for k, v in json.loads(TEXT_CONFIG.read_text()).items() if k not in ("architectures", "model_type")}
    te = CLIPTextModel(CLIPTextConfig(**cfg)).eval()
    bb = SD21Backbone("sd21-random", SD21Config(), unet.eval(), vae.eval(), torch.device("cpu"), torch.float32,
                      torch.zeros(1, 77, 1024)).to("cuda", torch.float16)
    bb.text_encoder_loader, bb.word_ids = (lambda: te), tiny_word_ids
    frames = torch.rand(T, H, W, 3)
    voc = load_vocabulary("ade20k" if words == 150 else [f"word{i}" for i in range(words)])

    def plain():
        capture_features(bb, prepare_batch(bb, frames), device=bb.device)

    seg = NamingSegmenter(bb, SegmentSettings(mode="fast"), naming=NamingSettings(voc))
    seg._vocabulary_keys()  # once per video: timed apart

    def named():
        seg._features(frames)

    out = {}
    for name, fn in (("plain", plain), ("named", named), ("plain", plain), ("named", named)):
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t) / T)
        out[name] = sorted(times)[len(times) // 2]
    log(f"== {torch.cuda.get_device_name()}: real-size SD 2.1 (random weights, fp16), {W}x{H}, {T} frames")
    log(f"  feature pass {1e3 * out['plain']:.1f} ms/frame; with naming ({words} words) {1e3 * out['named']:.1f} "
        f"ms/frame: +{100 * (out['named'] / out['plain'] - 1):.1f}%; vocabulary encoding once: "
        f"{seg.naming_seconds['text']:.2f} s")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=150)
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--height", type=int, default=448)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--time-frames", type=int, default=2, help="frames of the CPU timing (short: shared machines)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args(argv)
    with torch.inference_mode():
        flops(args.words, args.frames, args.height, args.width)
        cpu_time(args.words, args.time_frames, args.height, args.width, args.repeats)
        if args.device == "cuda":
            gpu_time(args.words, args.frames, args.height, args.width, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
