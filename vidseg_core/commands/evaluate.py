"""``evaluate``: score predicted label maps against ground truth; prints ONE JSON object.

    python -m vidseg_core evaluate --pred DIR --gt DIR [--metrics miou,vc8,vc16,jf]
        [--protocol semi|unsupervised] [--num-classes N] [--vspw-remap] [--per-frame]

DIR is a folder of PNG label maps (palette / greyscale, one per frame, in natural
name order) or a folder of such folders (a dataset: scores pooled over videos).
Predictions are paired with the ground truth by file name; where no name matches,
by the number in each name in numeric order (said in a warning), else refused.
"""
from __future__ import annotations

import json
import sys

HELP = "score predicted PNG label maps against ground truth (mIoU, mVC_8/16, DAVIS J&F); prints JSON"


def add_arguments(p) -> None:
    from ..metrics.confusion import CLASS_AVERAGES
    from ..metrics.davis import BOUND_TH, MAX_PROPOSALS, PROTOCOLS
    from ..metrics.evaluate import METRICS

    p.add_argument("--pred", required=True, metavar="DIR", help="predicted PNG label maps (or a folder of video folders)")
    p.add_argument("--gt", required=True, metavar="DIR", help="ground-truth PNG label maps, same layout as --pred")
    p.add_argument("--metrics", default=",".join(METRICS),
                   help=f"comma-separated subset of {','.join(METRICS)} (default: all)")
    p.add_argument("--protocol", default="semi", choices=PROTOCOLS,
                   help="DAVIS protocol for jf: semi (first/last frame not scored; the one for VidSeg) "
                        "or unsupervised (Hungarian matching of up to 20 proposals). Default semi")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes for mIoU (ids 0..N-1); default 124 with --vspw-remap, else max GT id + 1")
    p.add_argument("--vspw-remap", action="store_true",
                   help="apply the VSPW remap (0->255, -1, 254->255) to the GT for mIoU; VC always uses the raw GT")
    p.add_argument("--remap-pred", action="store_true",
                   help="with --vspw-remap: remap the predictions too (they hold RAW VSPW ids)")
    p.add_argument("--class-average", default="official", choices=CLASS_AVERAGES,
                   help="mIoU average: official nanmean (predicted-but-absent classes count 0) or gt_only")
    p.add_argument("--bound-th", type=float, default=BOUND_TH,
                   help=f"F boundary tolerance: fraction of the image diagonal, or pixels if >= 1 (default {BOUND_TH})")
    p.add_argument("--max-proposals", type=int, default=MAX_PROPOSALS,
                   help=f"unsupervised protocol: most predicted ids allowed (default {MAX_PROPOSALS})")
    p.add_argument("--per-frame", action="store_true", help="also print per-frame J/F and per-window VC values")
    p.add_argument("--require-all-frames", action="store_true",
                   help="refuse ground-truth frames without a prediction (default: evaluate the frames that have "
                        "one, with a warning, and count the others in the result)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="also write the JSON to this file")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args) -> int:
    from ..metrics.evaluate import evaluate_dirs
    from ..output_dir import check_output_file, write_failure

    out = None
    if args.out:  # checked before the (possibly long) evaluation
        out = check_output_file(args.out, inputs=[args.pred, args.gt], overwrite=args.overwrite, what="result file")
    result = evaluate_dirs(
        args.pred, args.gt, metrics=args.metrics, protocol=args.protocol, num_classes=args.num_classes,
        vspw_remap=args.vspw_remap, remap_pred=args.remap_pred, class_average=args.class_average,
        bound_th=args.bound_th, max_proposals=args.max_proposals, per_frame=args.per_frame,
        require_all=args.require_all_frames)
    text = json.dumps(result, allow_nan=False)
    sys.stdout.write(text + "\n")  # the result is never lost, even when the file cannot be written
    if out is not None:
        try:
            out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            raise write_failure(exc, out, ["the JSON printed above"], [out.name], out.parent) from exc
    return 0
