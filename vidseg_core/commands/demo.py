"""``demo``: segment a synthetic clip with known ground truth and print its scores."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError

HELP = "segment a generated clip with known ground truth (real SD 2.1 if found, else tiny-sd) and print mIoU / mVC"

#: what the demo writes into --out (its earlier outputs there are replaced on a rerun)
DEMO_OUTPUTS = ("frames", "gt", "result", "scores.json")

#: file names that identify an SD 2.1 checkpoint in the model folders
SD21_FILES = ("v2-1_512-ema-pruned.safetensors", "v2-1_512-ema-pruned.ckpt", "v2-1_768-ema-pruned.safetensors")


def add_arguments(p) -> None:
    p.add_argument("--out", default="vidseg_demo", metavar="DIR", help="output folder (default ./vidseg_demo)")
    p.add_argument("--model", default=None,
                   help="model to use (default: an SD 2.1 checkpoint from $VIDSEG_SD21, $VIDSEG_MODELS_DIR or "
                        "$COMFYUI_MODELS_DIR/checkpoints if found, else tiny-sd)")
    p.add_argument("--frames", type=int, default=16, help="clip length (default 16; mVC_8 needs more than 8)")
    p.add_argument("--size", default="256x448", help="clip size HxW (default 256x448)")
    p.add_argument("--mode", choices=["quality", "fast"], default="quality")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that holds other files too (they are kept); the demo's own earlier "
                        "outputs are always replaced")


def find_sd21() -> str | None:
    env = os.environ.get("VIDSEG_SD21")
    if env and Path(env).exists():
        return env
    from ..run_inputs import model_search_dirs

    for d in model_search_dirs():
        for name in SD21_FILES:
            if (d / name).is_file():
                return str(d / name)
    return None


def run(args) -> int:
    from PIL import Image

    from ..__main__ import main as cli
    from ..output_dir import OutputFolder
    from ..synthetic import make_clip
    from ..validation import check_int

    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise InputError(f"Invalid --size {args.size!r}.", "Write HxW, e.g. 256x448.") from None
    check_int("--frames", args.frames, 1, None, "Use e.g. --frames 16 (mVC_8 needs more than 8).")
    check_int("height of --size", h, 64, None, "Both sides must be at least 64 px, e.g. --size 256x448.")
    check_int("width of --size", w, 64, None, "Both sides must be at least 64 px, e.g. --size 256x448.")
    out = Path(args.out)
    # the demo's own earlier outputs are replaced (so `bash scripts/demo.sh` runs again); nothing else is
    folder = OutputFolder.open(out, "demo", DEMO_OUTPUTS, overwrite=args.overwrite, replace_finished=True)
    model = args.model or find_sd21() or "tiny-sd"
    tiny = model.lower().startswith("tiny")
    if tiny:
        print("model: tiny-sd - a RANDOMLY INITIALISED test backbone (no SD 2.1 checkpoint was found).\n"
              "       The run exercises the whole method, but its features carry no semantics: expect low scores.\n"
              "       For real results put v2-1_512-ema-pruned.safetensors in $COMFYUI_MODELS_DIR/checkpoints "
              "(or set VIDSEG_SD21=/path/to/it) and run again.")
    else:
        print(f"model: {model} (Stable Diffusion 2.1)")
    if folder.state in ("finished", "partial"):
        print(f"note: replacing the outputs of the earlier demo run in {out}")
    frames, gt = make_clip(args.frames, (h, w))
    folder.start({"model": model, "frames": args.frames, "size": [h, w], "mode": args.mode})
    folder.claim(["frames/", "gt/", "result/"])
    for i, (f, g) in enumerate(zip(frames, gt)):
        paths = folder.claim([f"frames/{i:05d}.png", f"gt/{i:05d}.png"])
        with folder.writing(f"frames/{i:05d}.png"):
            Image.fromarray(f).save(paths[0])
        with folder.writing(f"gt/{i:05d}.png"):
            gi = Image.fromarray(g, mode="P")
            gi.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
            gi.save(paths[1])
    rc = cli(["segment", str(out / "frames"), "--model", model, "--out", str(out / "result"),
              "--reference-mask", str(out / "gt" / "00000.png"), "--clusters", "5", "--mode", args.mode,
              "--device", args.device, "--precision", args.precision, "--overwrite"])
    if rc != 0:
        folder.finish("failed")
        return rc
    from ..metrics import evaluate_dirs

    scores = evaluate_dirs(out / "result" / "labels", out / "gt", metrics=("miou", "vc8", "jf"),
                           num_classes=3, protocol="semi")
    figures = {
        "model": model, "tiny_backbone": tiny, "mode": args.mode, "frames": args.frames, "size": [h, w],
        "mIoU": scores["miou"]["miou"], "mVC_8": scores["vc8"]["value"], "J&F": scores["jf"]["J&F-Mean"],
        "outputs": str(out / "result"),
    }
    folder.claim(["scores.json"])  # recorded only now: a file of that name is never ours before this
    with folder.writing("scores.json") as path:
        path.write_text(json.dumps({"summary": figures, "details": scores}, indent=2, default=str))
    folder.finish()
    print(json.dumps(figures, indent=2))
    return 0
