"""``segment`` with its outputs written on the background writer thread vs in turn (``--serial-writes``).

The same command both ways (read, features, coarse stage, upsampling, label PNGs and the overlay video),
``--repeats`` times in interleaved rounds (``benchmarks/timing.py``), in one process; prints wall and CPU
seconds per frame, the per-round ratio, the writer's busy time and how long the computation waited for it
(``summary.json``: ``seconds.write`` / ``seconds.write_wait``).  Default: the 14 blackswan frames at
``--max-side 448``, ``tiny-sd``, fast mode, K = 5, batches of 2 (7 batches: 6 writes can overlap).

    python benchmarks/write_overlap.py [--data clips/blackswan/frames] [--mode fast|quality]
        [--batch-size 2] [--max-side 448] [--model tiny-sd] [--repeats 3]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmarks.clips import CLIPS, missing_clip_message  # noqa: E402
from timing import ratio_text, time_cases  # noqa: E402

from vidseg_core.__main__ import main as vidseg  # noqa: E402

DEFAULT_DATA = CLIPS / "blackswan" / "frames"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model", default="tiny-sd")
    ap.add_argument("--mode", default="fast", choices=["fast", "quality"])
    ap.add_argument("--clusters", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-side", type=int, default=448)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(missing_clip_message(args.data), file=sys.stderr)
        return 2
    frames = len([f for f in args.data.iterdir() if f.suffix.lower() in (".jpg", ".png")])
    work = Path(tempfile.mkdtemp(prefix="vidseg_write_overlap_"))
    summaries = {}

    def case(serial: bool):
        name = "serial" if serial else "overlapped"

        def run():
            out = work / name
            argv = ["segment", str(args.data), "--model", args.model, "--out", str(out), "--mode", args.mode,
                    "--clusters", str(args.clusters), "--batch-size", str(args.batch_size), "--max-side",
                    str(args.max_side), "--quiet", "--overwrite"] + (["--serial-writes"] if serial else [])
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                if vidseg(argv) != 0:
                    raise RuntimeError(f"segment failed: {argv}")
            s = json.loads((out / "summary.json").read_text())["seconds"]
            summaries.setdefault(name, []).append((s["write"], s["write_wait"]))
        return run

    try:
        samples, _ = time_cases({"serial": case(True), "overlapped": case(False)}, repeats=args.repeats,
                                per=frames, log=print)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nsegment {args.data} ({frames} frames, max side {args.max_side}), {args.model}, {args.mode} mode, "
          f"K = {args.clusters}, batches of {args.batch_size}, overlay on; {args.repeats} interleaved rounds; "
          f"torch threads {__import__('torch').get_num_threads()}")
    for name, s in samples.items():
        w = summaries[name][-args.repeats:]
        print(f"  {name:10s} {s.text()} s/frame wall, {s.text('cpu')} s/frame CPU; writer busy "
              f"{min(x for x, _ in w):.3f}-{max(x for x, _ in w):.3f} s, compute waited "
              f"{min(y for _, y in w):.3f}-{max(y for _, y in w):.3f} s per run")
    print(f"  serial / overlapped wall: {ratio_text(samples['serial'], samples['overlapped'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
