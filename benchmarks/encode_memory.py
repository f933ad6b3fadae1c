"""Peak memory of the feature pass's VAE encoding against frames per VAE call (the backbone's ``decode_chunk``).

At large frame sizes the VAE encoder's full-resolution activations set the pipeline's peak (see
docs/comfyui_versions.md, "Server memory"). Each chunk size runs in a fresh process that loads the backbone,
encodes one batch of seeded random frames and reports the rise of its high-water mark (``VmHWM``) over the
loaded model, and the seconds; the latents of every chunk size are compared with those of the first.

    python benchmarks/encode_memory.py [--model tiny-sd] [--size 832 448] [--frames 14] [--chunks 4 2 1]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TAG = "ENCODE_MEMORY "


def _hwm_mib() -> float:
    from benchmarks.proc_status import status_mb

    hwm = status_mb("VmHWM")
    if hwm is None:
        raise RuntimeError("VmHWM not available (Linux /proc needed)")
    return hwm


def child(model: str, size, frames: int, chunk: int, out: str) -> None:
    import dataclasses

    import torch

    from vidseg_core.backbones import load_backbone

    bb = load_backbone(model, device="cpu", precision="fp32")
    bb.config = dataclasses.replace(bb.config, decode_chunk=chunk, encode_pixels=None)
    w, h = size
    x = torch.rand(frames, 3, h, w, generator=torch.Generator().manual_seed(3)) * 2 - 1
    before = _hwm_mib()
    t = time.perf_counter()
    z = bb.encode(x, torch.Generator().manual_seed(0))
    secs = time.perf_counter() - t
    torch.save(z, out)
    print(TAG + json.dumps({"chunk": chunk, "rise_mib": _hwm_mib() - before, "seconds": secs}), flush=True)


def main(argv=None) -> None:
    from benchmarks.child_process import run_tagged_child
    from benchmarks.report import cpu_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-sd")
    ap.add_argument("--size", type=int, nargs=2, default=[832, 448], metavar=("W", "H"))
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--chunks", type=int, nargs="+", default=[4, 2, 1])
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--latents", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        child(args.model, args.size, args.frames, args.child, args.latents)
        return
    import torch

    print(f"{args.model}, {args.frames} frames {args.size[0]}x{args.size[1]}, CPU fp32; {cpu_model()}")
    with tempfile.TemporaryDirectory() as tmp:
        first = None
        for chunk in args.chunks:
            path = str(Path(tmp) / f"z{chunk}.pt")
            rep = run_tagged_child([sys.executable, __file__, "--model", args.model, "--size", *map(str, args.size),
                                    "--frames", str(args.frames), "--child", str(chunk), "--latents", path],
                                   TAG, ROOT)
            z = torch.load(path)
            first = z if first is None else first
            diff = float((z - first).abs().max())
            print(f"  {chunk} frame(s) a VAE call: high-water mark +{rep['rise_mib'] / 1024:.2f} GiB, "
                  f"{rep['seconds']:.1f} s; latents vs {args.chunks[0]} a call: "
                  f"{'bitwise equal' if torch.equal(z, first) else f'max |Δ| {diff:.2g}'}")


if __name__ == "__main__":
    main()
