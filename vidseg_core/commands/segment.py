"""``segment``: segment a video into temporally stable label maps (the whole method)."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from ..errors import InputError
from ._common import add_input_arguments, add_model_arguments, load_model, open_source, peak_rss_mb

HELP = "segment a video: label PNGs per frame, an overlay video and summary.json in --out DIR"

#: what segment writes into DIR (and the only things --overwrite replaces)
OUTPUTS = ("labels", "overlay.mp4", "overlay.gif", "summary.json")


def add_arguments(p) -> None:
    add_input_arguments(p)
    add_model_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--reference-mask", default=None, metavar="PNG",
                   help="label mask (palette or grey PNG) naming the clusters, e.g. a first-frame annotation")
    p.add_argument("--reference-frame", type=int, default=0,
                   help="index (among the selected frames) of the frame the reference mask belongs to (default 0)")
    add_method_arguments(p)
    p.add_argument("--fps", type=float, default=12.0, help="frame rate of the overlay video")
    p.add_argument("--no-overlay", action="store_true", help="do not write the overlay video")
    p.add_argument("--overwrite", action="store_true", help="replace VidSeg outputs already in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_method_arguments(p) -> None:
    """The method's settings (one video at a time): shared by ``segment`` and ``dataset``."""
    p.add_argument("--clusters", type=int, default=20, help="K of the KMeans initialisation (default 20)")
    p.add_argument("--mode", choices=["quality", "fast"], default="quality",
                   help="quality = masked modulation (the paper); fast = edge-aware upsampling, no extra passes")
    p.add_argument("--refiner", choices=["cbr", "cbr_compat", "none"], default="cbr",
                   help="correspondence-based refinement: the paper's (cbr), the authors' code (cbr_compat), or none")
    p.add_argument("--lam", type=float, default=50.0, help="modulation strength lambda (default 50)")
    p.add_argument("--filter-s", type=float, default=0.7, help="difference-map filter s (default 0.7, 1 = off)")
    p.add_argument("--compat", choices=["none", "wrap", "wrap+jpeg"], default="none",
                   help="reproduce the authors' uint8 difference bug (wrap) and JPEG round trip (default: fixed)")


def settings_from_args(args, reference=None, reference_frame: int = 0):
    """The :class:`~vidseg_core.pipeline.SegmentSettings` of the method options (:func:`add_method_arguments`)."""
    from ..modulation import ModulationSettings
    from ..pipeline import SegmentSettings

    if not 1 <= args.clusters <= 255:
        raise InputError(f"--clusters must be in 1..255, got {args.clusters}.", "The paper uses 20.")
    return SegmentSettings(
        num_clusters=args.clusters, batch_size=args.batch_size, mode=args.mode, refiner=args.refiner,
        seed=args.seed, reference=reference, reference_frame=reference_frame,
        modulation=ModulationSettings(lam=args.lam, filter_s=args.filter_s, compat=args.compat))


def labels_at_size(labels, size):
    """Label maps ``[n,h,w]`` brought back to ``size`` (the input's, after a --max-side cap) by nearest."""
    if tuple(labels.shape[1:]) == tuple(size):
        return labels
    return torch.nn.functional.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")[:, 0].long()


def _prepare_out(out: Path, source_path: Path, overwrite: bool) -> None:
    out_r, src_r = out.resolve(), source_path.resolve()
    if out_r == src_r or out_r in src_r.parents:
        raise InputError(f"The output folder {out} contains or is the input.", "Choose an output folder elsewhere.")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder.", "Choose a folder for --out.")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"The output folder {out} is not empty.",
                             "Choose an empty or new folder, or pass --overwrite to replace VidSeg's outputs there.")
        for name in OUTPUTS:  # only our own outputs are replaced; nothing else is touched
            p = out / name
            if p.is_dir():
                for f in p.glob("*.png"):
                    f.unlink()
            elif p.exists():
                p.unlink()
    (out / "labels").mkdir(parents=True, exist_ok=True)


def load_reference(path, frame_size, warn=True):
    """A reference label mask as an int array; a mask of another size is resized (nearest) with a warning."""
    from ..metrics.io import read_label_png

    ref = read_label_png(path)
    h, w = frame_size
    if ref.shape != (h, w):
        from ..labels import resize_nearest

        if abs(ref.shape[1] / ref.shape[0] - w / h) > 0.02 * (w / h):
            raise InputError(f"The reference mask is {ref.shape[1]}x{ref.shape[0]} but the frames are {w}x{h} "
                             "(another aspect ratio: it does not belong to this video).",
                             "Give the mask of a frame of this video, at the frames' size.")
        if warn:
            warnings.warn(f"reference mask {ref.shape[1]}x{ref.shape[0]} resized (nearest) to the frames' {w}x{h}")
        ref = resize_nearest(ref, (h, w))
    return ref


class _Bar:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, done, total, stage):
        if self.quiet or stage != "batch":
            return
        width = 30
        fill = int(width * done / max(1, total))
        el = time.perf_counter() - self.t0
        print(f"\r[{'#' * fill}{'.' * (width - fill)}] batch {done}/{total}  {el:6.1f} s", end="", file=sys.stderr,
              flush=True)
        if done >= total:
            print(file=sys.stderr)


def run(args) -> int:
    from ..label_io import OverlayVideoWriter, overlay, save_label_png
    from ..pipeline import VideoSegmenter
    from ..cpu_memory import use_huge_pages

    use_huge_pages()  # fewer page faults for large CPU activations (before torch's first large allocation)
    out = Path(args.out)
    t0 = time.perf_counter()
    source = open_source(args)
    settings = settings_from_args(args)  # validates the method options before any work
    reference = None
    if args.reference_mask:
        reference = load_reference(args.reference_mask, source.source_size)
        if reference.shape != tuple(source.frame_size):  # the working-resolution cap, not a user error
            from ..labels import resize_nearest

            reference = resize_nearest(reference, tuple(source.frame_size))
        if not 0 <= args.reference_frame < len(source):
            raise InputError(f"--reference-frame {args.reference_frame} is outside the {len(source)} selected frames.",
                             f"Use an index in 0..{len(source) - 1}.")
    _prepare_out(out, Path(args.input), args.overwrite)
    backbone = load_model(args)
    t_load = time.perf_counter() - t0
    settings = dataclasses.replace(settings, reference=reference, reference_frame=args.reference_frame)
    seg = VideoSegmenter(backbone, settings, _Bar(args.quiet))
    names = source.names
    src_h, src_w = source.source_size
    writer = None if args.no_overlay else OverlayVideoWriter(out / "overlay", args.fps)
    t_write = 0.0
    for res in seg.run(source.read, len(source), source.frame_size):
        t = time.perf_counter()
        labels = labels_at_size(res.labels, (src_h, src_w))  # working-resolution cap: back to the input size
        for i, f in enumerate(res.batch.written):
            save_label_png(out / "labels" / f"{names[f]}.png", labels[i])
        if writer is not None:
            frames = source.read(res.batch.write_start, res.batch.stop)
            lab = res.labels if tuple(res.labels.shape[1:]) == tuple(frames.shape[1:3]) else labels
            writer.write(overlay(frames, lab, seg.summary.table if seg.summary else None))
        t_write += time.perf_counter() - t
    overlay_path = writer.close() if writer is not None else None
    summary = seg.summary.to_dict()
    summary["seconds"]["load"] = round(t_load, 3)
    summary["seconds"]["write"] = round(t_write, 3)
    summary["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    summary["input"] = {"path": str(args.input), "frames": len(source), "names": [names[0], names[-1]],
                        "source_size": [src_h, src_w], "frame_range": args.frames, "stride": args.stride,
                        "max_side": args.max_side}
    summary["model"] = {"name": backbone.name, "family": backbone.family, "device": str(backbone.device),
                        "dtype": str(backbone.dtype).replace("torch.", ""),
                        "compile": backbone.compiled.state.to_dict() if getattr(backbone, "compiled", None) else None}
    summary["peak_rss_mb"] = round(peak_rss_mb(), 1)
    summary["outputs"] = {"labels": "labels/", "overlay": overlay_path.name if overlay_path else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"segmented {len(source)} frames with {backbone.name} ({args.mode}) in {summary['seconds']['total']:.1f} s; "
          f"{len(seg.summary.table)} labels; wrote {out}")
    return 0
