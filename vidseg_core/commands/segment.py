"""``segment``: segment a video into temporally stable label maps (the whole method)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from ..errors import InputError
from ._common import add_input_arguments, add_model_arguments, load_model, open_source, peak_rss_mb
from ..run_inputs import load_reference, reference_at_working_size
from ..video_run import labels_at_size, make_segmenter, segment_streaming
from .naming_args import add_naming_arguments, load_namer, naming_settings, write_selection

HELP = "segment a video: label PNGs per frame, an overlay video and summary.json in --out DIR"

#: what segment writes into DIR (and the only things --overwrite replaces)
OUTPUTS = ("labels", "overlay.mp4", "overlay.gif", "summary.json", "selection")


def add_arguments(p) -> None:
    add_input_arguments(p)
    add_model_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--reference-mask", default=None, metavar="PNG",
                   help="label mask (palette or grey PNG) naming the clusters, e.g. a first-frame annotation")
    p.add_argument("--reference-frame", type=int, default=0,
                   help="index (among the selected frames) of the frame the reference mask belongs to (default 0)")
    add_method_arguments(p)
    add_naming_arguments(p)
    p.add_argument("--fps", type=float, default=12.0, help="frame rate of the overlay video")
    p.add_argument("--no-overlay", action="store_true", help="do not write the overlay video")
    p.add_argument("--legend", action="store_true",
                   help="draw a legend on the overlay video: each named label's colour and name (names from "
                        "--reference-mask or --vocabulary; with --vocabulary the overlay is written after the run)")
    p.add_argument("--overwrite", action="store_true", help="replace VidSeg outputs already in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--serial-writes", action="store_true",
                   help="write each batch's outputs before computing the next (default: while computing it)")


def add_method_arguments(p) -> None:
    """The method's settings (one video at a time): shared by ``segment`` and ``dataset``."""
    p.add_argument("--clusters", type=int, default=20, help="K of the KMeans initialisation (default 20)")
    p.add_argument("--kmeans", choices=["torch", "sklearn"], default="torch",
                   help="KMeans implementation: torch (default; GPU-capable, its own k-means++ draws) or sklearn "
                        "(scikit-learn seeded with --seed: the authors' exact clustering)")
    p.add_argument("--mode", choices=["quality", "fast"], default="quality",
                   help="quality = masked modulation (the paper); fast = edge-aware upsampling, no extra passes")
    p.add_argument("--refiner", choices=["cbr", "cbr_compat", "none"], default="cbr",
                   help="correspondence-based refinement: the paper's (cbr), the authors' code (cbr_compat), or none")
    p.add_argument("--lam", type=float, default=50.0, help="modulation strength lambda (default 50)")
    p.add_argument("--filter-s", type=float, default=0.7, help="difference-map filter s (default 0.7, 1 = off)")
    p.add_argument("--compat", choices=["none", "wrap", "wrap+jpeg"], default="none",
                   help="reproduce the authors' uint8 difference bug (wrap) and JPEG round trip (default: fixed)")
    p.add_argument("--cuts", default="auto", metavar="auto|off|F1,F2,...",
                   help="scene cuts of an edited video: auto = detect them (default), off = one shot, or the first "
                        "frames of the new shots (among the selected frames), e.g. 120,300; batches never span a cut "
                        "and a returning scene gets its earlier labels")
    p.add_argument("--link-threshold", type=float, default=0.8,
                   help="a new shot's cluster takes a label seen before at this centroid cosine similarity "
                        "(default 0.8; 1 = every shot gets new labels)")
    p.add_argument("--seam-overlap", type=int, default=0, metavar="N",
                   help="frames each batch shares with the one before in the same shot; their labels decide the "
                        "next batch's label ids (default 0: the paper's disjoint batches)")


def settings_from_args(args, reference_mask=None, reference_frame: int = 0):
    """The :class:`~vidseg_core.pipeline.SegmentSettings` of the method options (:func:`add_method_arguments`)."""
    from ..modulation import ModulationSettings
    from ..pipeline import SegmentSettings
    from ..shots import ShotSettings, parse_cuts

    settings = SegmentSettings(
        num_clusters=args.clusters, batch_size=args.batch_size, mode=args.mode, refiner=args.refiner,
        seed=args.seed, reference_mask=reference_mask, reference_frame=reference_frame, kmeans_impl=args.kmeans,
        modulation=ModulationSettings(lam=args.lam, filter_s=args.filter_s, compat=args.compat),
        shots=ShotSettings(cuts=parse_cuts(args.cuts), link_threshold=args.link_threshold,
                           overlap=args.seam_overlap))
    settings.check()  # every value checked before any model is loaded
    return settings


def segment_settings(args, source):
    """The run's settings from the arguments, every one checked (before the model is loaded), and the reference
    labels lost at the working size (:func:`reference_at_working_size`)."""
    from ..validation import check_finite

    reference_mask, lost = None, []
    if args.reference_mask:
        reference_mask = load_reference(args.reference_mask, source.source_size)
        # the working-resolution cap, not a user error; labels it loses are reported
        reference_mask, lost = reference_at_working_size(reference_mask, source.frame_size)
    if not 0 <= args.reference_frame < len(source):  # with or without a mask: before the model loads
        raise InputError(f"--reference-frame {args.reference_frame} is outside the {len(source)} selected frames.",
                         f"Use an index in 0..{len(source) - 1}.")
    if not check_finite("--fps", args.fps, "Use e.g. --fps 12.") > 0:
        raise InputError(f"--fps {args.fps} must be positive.", "Use e.g. --fps 12.")
    settings = settings_from_args(args, reference_mask, args.reference_frame)
    if not isinstance(settings.shots.cuts, str):  # user cuts: inside the selected frames, checked now
        from ..shots import shots_from_cuts

        shots_from_cuts(len(source), settings.shots.cuts)
    return settings, lost


def run(args) -> int:
    from ..output_dir import OutputFolder
    from ._common import ProgressBar, check_model_options, input_paths

    from ..cpu_memory import use_huge_pages

    use_huge_pages()  # fewer page faults for large CPU activations (before torch's first large allocation)
    out = Path(args.out)
    t0 = time.perf_counter()
    source = open_source(args)
    settings, lost_at_max_side = segment_settings(args, source)
    args._naming = naming_settings(args)
    if getattr(args, "legend", False) and args.no_overlay:
        raise InputError("--legend is given with --no-overlay.", "Leave out one of them.")
    check_model_options(args)
    folder = OutputFolder.open(out, "segment", OUTPUTS, inputs=input_paths(args), overwrite=args.overwrite)
    key = resume_key(args, source)
    keep = []
    if folder.state == "partial":
        same = folder.previous.get("settings", {}).get("resume_key") == key
        keep = [d for d in folder.previous_done if d.startswith("labels/")] if same else []
        print(f"note: {out} holds the unfinished outputs of an earlier run: " +
              (f"its {len(keep)} complete label maps are reused (same settings)" if keep else "they are replaced"),
              file=sys.stderr)
    backbone = load_model(args)
    load_namer(args, args._naming, backbone)
    t_load = time.perf_counter() - t0
    names = source.names
    folder.start({"args": {k: v for k, v in vars(args).items() if not k.startswith("_")}, "resume_key": key},
                 keep=keep)
    folder.claim(["labels/"])  # each file is recorded right before it is written (never one it may not write)
    folder.expect([f"labels/{n}.png" for n in names] + ([] if args.no_overlay else ["overlay"]) + ["summary.json"])
    bar = ProgressBar(args.quiet)
    try:
        summary, overlay_path = _segment(args, source, backbone, settings, folder, bar)
    except BaseException as exc:
        folder.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", error=str(exc)[:500])
        raise
    finally:
        bar.close()
    if args.select is not None:
        from ..labels import LabelTable

        folder.claim(["selection/"])
        try:  # names are known only now: an unknown one leaves the finished label maps and summary in place
            summary["selection"] = {"select": args.select, "values": write_selection(
                args, folder, names, LabelTable.from_dict(summary["label_table"]))}
        except InputError as exc:
            summary["selection"] = {"select": args.select, "error": str(exc)}
            print(f"error: --select: {exc}", file=sys.stderr)
    summary["lost_at_max_side"] = lost_at_max_side
    summary["lost_labels"] = sorted(set(summary.get("lost_labels") or []) | set(lost_at_max_side))
    summary["seconds"]["load"] = round(t_load, 3)
    summary["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    folder.claim(["summary.json"])
    with folder.writing("summary.json") as path:
        path.write_text(json.dumps(summary, indent=2))
    folder.finish()
    if "error" in summary.get("selection", {}):
        return 2
    print(f"segmented {len(source)} frames with {backbone.name} ({args.mode}) in {summary['seconds']['total']:.1f} s; "
          f"{len(summary['label_table']['entries'])} labels; wrote {out}")
    return 0


def _segment(args, source, backbone, settings, folder, bar):
    """Run the method; each batch's label maps and overlay frames are written while the next batch is
    computed (:class:`~vidseg_core.background_writer.BackgroundWriter`; ``--serial-writes``: in turn)."""
    from ..label_io import OverlayVideoWriter

    seg = make_segmenter(backbone, settings, bar, getattr(args, "_naming", None))
    names = source.names
    video = None if args.no_overlay else OverlayVideoWriter(
        folder.path / "overlay", args.fps, on_create=lambda p: folder.claim([p.name]),
        on_abandon=lambda p: folder.release([p.name]))  # overlay.mp4 or overlay.gif: only the one written is VidSeg's
    reused = set(folder.completed)
    legend = bool(getattr(args, "legend", False))
    names_later = video is not None and legend and getattr(args, "_naming", None) is not None

    def have(batch):  # label maps kept from the unfinished earlier run: no upsampling again
        return all(f"labels/{names[f]}.png" in reused for f in batch.written)

    def prepare(res):  # the frames are read here (the source is not thread-safe), the table as it is now
        frames = None if video is None or names_later else source.read(res.batch.write_start, res.batch.stop)
        table = seg.summary.table if seg.summary else None
        return lambda: (_write_batch(res, frames, table, names, source.source_size, folder,
                                     None if names_later else video, legend),
                        bar.written(res.batch.index + 1))  # said only once the files are written

    # on a failure what was computed is still written, and the first error is reported
    writer = segment_streaming(seg, source, prepare, serial=getattr(args, "serial_writes", False),
                               skip_upsample=have)
    overlay_path = None
    if names_later:  # the words name the labels only now: the overlay and its legend are written after the run
        _write_overlay(video, source, seg.summary.table, names, folder, settings.batch_size,
                       (seg.summary.shots or {}).get("cuts", []))
    if video is not None:
        with folder.writing("overlay"):
            overlay_path = video.close()
    summary = seg.summary.to_dict()
    if getattr(seg, "naming", None) is not None:
        summary["naming"] = seg.naming
    summary["seconds"]["write"] = round(writer.busy_seconds, 3)  # overlapped with the next batch's work
    summary["seconds"]["write_wait"] = round(writer.wait_seconds, 3)  # the part the computation waited for
    h, w = source.source_size
    summary["input"] = {"path": str(args.input), "frames": len(source), "names": [names[0], names[-1]],
                        "source_size": [h, w], "frame_range": args.frames, "stride": args.stride,
                        "max_side": args.max_side}
    summary["model"] = {"name": backbone.name, "family": backbone.family, "device": str(backbone.device),
                        "dtype": str(backbone.dtype).replace("torch.", ""),
                        "compile": backbone.compiled.state.to_dict() if getattr(backbone, "compiled", None) else None}
    summary["peak_rss_mb"] = round(peak_rss_mb(), 1)
    summary["outputs"] = {"labels": "labels/", "overlay": overlay_path.name if overlay_path else None}
    summary["reused_label_maps"] = len(reused)
    return summary, overlay_path


def _write_batch(res, frames, table, names, source_size, folder, video, legend: bool = False) -> None:
    """One batch's label PNGs (or the reused ones read back) and overlay frames (on the writer thread)."""
    from ..label_io import mark_cuts, overlay, save_label_png
    from ..legend import add_legend

    batch_names = [f"labels/{names[f]}.png" for f in res.batch.written]
    if res.labels is None:
        from ..metrics.io import read_label_png

        labels = torch.stack([torch.from_numpy(read_label_png(folder.path / r).astype("int64")) for r in batch_names])
    else:
        labels = labels_at_size(res.labels, source_size)  # working-resolution cap: back to the input size
        folder.claim(batch_names)
        for i, rel in enumerate(batch_names):
            with folder.writing(rel) as path:
                save_label_png(path, labels[i])
        folder.done(batch_names)
    if video is not None:
        lab = labels_at_size(labels, tuple(frames.shape[1:3]))
        with folder.writing("overlay", complete=False):
            over = mark_cuts(overlay(frames, lab, table), [c - res.batch.write_start for c in res.cuts])
            video.write(add_legend(over, table) if legend else over)


def _write_overlay(video, source, table, names, folder, chunk: int, cuts=()) -> None:
    """The overlay with its legend (and the cut marks) from the written label maps, ``chunk`` frames at a time."""
    from ..label_io import mark_cuts, overlay
    from ..legend import add_legend
    from ..metrics.io import read_label_png

    for a in range(0, len(source), chunk):
        b = min(len(source), a + chunk)
        frames = source.read(a, b)
        labels = torch.stack([torch.from_numpy(read_label_png(folder.path / f"labels/{names[f]}.png").astype("int64"))
                              for f in range(a, b)])
        lab = labels_at_size(labels, tuple(frames.shape[1:3]))
        with folder.writing("overlay", complete=False):
            video.write(add_legend(mark_cuts(overlay(frames, lab, table), [c - a for c in cuts]), table))


def resume_key(args, source) -> dict:
    """Everything that decides the label maps.  A rerun reuses the complete label maps of an unfinished run
    only when its key is the same (every selected frame, and the model and mask files, by size and modification
    time: :meth:`~vidseg_core.video_io.FrameSource.fingerprint`)."""
    from .. import __version__

    key = {k: getattr(args, k) for k in ("frames", "stride", "max_side", "model", "device", "precision",
                                         "prediction_type", "batch_size", "seed", "reference_frame", "clusters",
                                         "mode", "refiner", "lam", "filter_s", "compat", "kmeans", "cuts",
                                         "link_threshold", "seam_overlap")}
    key["input"] = str(Path(args.input).resolve())
    key["names"] = [len(source), source.names[0], source.names[-1]]
    key["frames_fingerprint"] = source.fingerprint()
    for name in ("model", "reference_mask"):
        value = getattr(args, name)
        p = Path(value) if value else None
        key[name + "_file"] = [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] \
            if p is not None and p.is_file() else value
    key["vidseg"] = __version__
    return json.loads(json.dumps(key))
