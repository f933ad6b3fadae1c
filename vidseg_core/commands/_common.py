"""Arguments and helpers shared by the sub-commands (one spelling everywhere)."""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import List

from .. import run_inputs
from ..run_inputs import open_frames


def add_input_arguments(p) -> None:
    p.add_argument("input", metavar="INPUT", help="video file (mp4, mov, avi, webm, gif) or folder of frames")
    add_frame_arguments(p)


def add_frame_arguments(p) -> None:
    """Which frames of a video are used, and at what resolution (also per video of ``dataset``)."""
    p.add_argument("--frames", default=None, metavar="START:STOP",
                   help="frame range of the input (default: all), e.g. 0:50")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1)")
    p.add_argument("--max-side", type=int, default=None,
                   help="cap on the working resolution: the longer side is scaled down to this many pixels")


def add_model_arguments(p) -> None:
    p.add_argument("--model", required=True,
                   help="checkpoint file, diffusers folder, or 'tiny-sd' / 'tiny-svd' (random test backbones); "
                        "bare names are looked up in $VIDSEG_MODELS_DIR and $COMFYUI_MODELS_DIR/{checkpoints,diffusers,vidseg}")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto = fp32 on CPU, bf16/fp16 on GPU")
    p.add_argument("--prediction-type", default=None, choices=["epsilon", "v_prediction"],
                   help="SD 2.1 only: override the prediction type guessed from the file name (768 -> v)")
    p.add_argument("--batch-size", type=int, default=None, help="frames per batch B (default 14, the paper's)")
    p.add_argument("--seed", type=int, default=None, help="per-batch seed (default 1, the authors')")
    p.add_argument("--compile", choices=["off", "on"], default="off",
                   help="torch.compile the UNet and VAE blocks (default off; minutes of compilation on the first "
                        "batch, falls back to eager with a warning when compilation fails)")


def input_paths(args, names=("input", "reference_mask", "model")) -> List[str]:
    """Every file or folder the command reads (frames, reference mask, model files...) that exists: the
    output checks (:func:`~vidseg_core.output_dir.check_outside_inputs`) refuse an output touching any."""
    values = [getattr(args, n, None) for n in names]
    return [str(v) for v in values if v and Path(v).exists()]


def open_source(args):
    """The input frames (``INPUT``), with ``--frames / --stride / --max-side`` checked
    (:func:`~vidseg_core.run_inputs.open_frames`)."""
    return open_frames(args.input, args.frames, args.stride, args.max_side)


def check_model_options(args) -> None:
    """Device, precision and the common numbers, checked before the model is loaded."""
    from ..devices import resolve_dtype
    from ..validation import check_batch_size, check_seed

    resolve_dtype(args.precision, args.device)
    check_batch_size(args.batch_size)
    check_seed(args.seed)


def load_model(args):
    """The backbone of ``--model`` (:func:`~vidseg_core.run_inputs.load_model`)."""
    return run_inputs.load_model(args.model, args.device, args.precision, args.prediction_type,
                                 compile=getattr(args, "compile", "off") == "on")


class ProgressBar:
    """Progress of a run on stderr: batch i/n, the stage it is in (and its steps), elapsed seconds.

    Fed with ``(done, total, stage)`` from :class:`~vidseg_core.pipeline.VideoSegmenter` (its ``batch`` stage
    means computed), and :meth:`written` once a batch's files are written.  On a terminal
    the line is redrawn every second, so it is never silent during a long stage; elsewhere (a log file)
    one line is printed per stage of every batch.
    """

    LABELS = {"features": "diffusion features", "coarse": "scene context + refinement",
              "upsample": "upsampling", "modulation": "masked modulation"}

    def __init__(self, quiet: bool = False, stream=None, interval: float = 1.0):
        import threading

        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.done = 0
        self.total = 1
        self.text = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._thread = None
        if self._tty and not quiet:
            self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True)
            self._thread.start()

    def __call__(self, done: int, total: int, stage: str) -> None:
        if self.quiet:
            return
        with self._lock:
            if stage == "modulation":  # (batch * n + units done in it, batches * n)
                n = max(1, total // max(1, self.total))
                k = max(0, done - 1)
                text = f"batch {k // n + 1}/{self.total}: {self.LABELS[stage]} step {k % n + 1}/{n}"
            elif stage == "batch":  # computed; "written" comes from written(), once its files are on disk
                self.total = max(1, total)
                text = f"batch {done}/{self.total} computed"
            elif stage == "written":
                self.done, self.total = done, max(1, total)
                text = f"batch {done}/{self.total} written"
            else:
                self.total = max(1, total)
                text = f"batch {done + 1}/{self.total}: {self.LABELS.get(stage, stage)}"
            changed = text.split(" step ")[0] != self.text.split(" step ")[0]
            self.text = text
            if self._tty:
                self._draw()
            elif changed:
                print(self._line(), file=self.stream, flush=True)

    def written(self, done: int) -> None:
        """Batch ``done`` (1-based) is written: its files are complete (called by the writer)."""
        self(done, self.total, "written")

    def _line(self) -> str:
        width = 24
        fill = int(width * self.done / self.total)
        return f"[{'#' * fill}{'.' * (width - fill)}] {self.text}  {time.perf_counter() - self.t0:7.1f} s"

    def _draw(self) -> None:
        print(f"\r{self._line():<100}", end="", file=self.stream, flush=True)

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                if self.text:
                    self._draw()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._tty and self.text and not self.quiet:
            print(file=self.stream, flush=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
