"""The output folder of a dataset run: atomic per-video completion, resume, failures, progress.

``DIR/<video>/<frame>.png`` is the official results layout.  Book-keeping lives in ``DIR/.vidseg/``:

* ``run.json``: what the run is (layout, split, model, method settings); a later run into the same folder
  must match it (resuming with other settings would mix two methods' outputs);
* ``partial/<video>/``: where a video is written while it is segmented;
* ``done/<video>.json``: the completion marker, with the video's record (frames, seconds, label table).

A video is finished in three steps: its PNGs are verified in ``partial/`` (one readable label map per
frame, at the frames' size), the folder is renamed to ``DIR/<video>`` (atomic on one file system; where that
folder exists already, its label maps are replaced one by one and any other file in it is kept), and the
marker is written to a temporary file, flushed to disk and renamed into place (atomic).  A run killed at
any moment therefore leaves either a marker for a complete video or no marker; a video without a marker is
redone from scratch.  VidSeg writes only ``<frame>.png`` files into ``DIR/<video>``: ``--overwrite`` removes
the label maps a marker lists, never other files.  ``failed/<video>.json`` records a failure (kept until
the video succeeds).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from ..errors import InputError, OutputError
from ..output_dir import check_outside_inputs, check_writable

STATE = ".vidseg"

#: keys a ``run.json`` of an earlier version spells otherwise: (where, old key, today's key)
RENAMED_KEYS = ((("settings", "modulation"), "reference", "reference_pass"),)


def upgrade_manifest(manifest: dict) -> dict:
    """``manifest`` (a ``run.json`` as read) with the keys renamed since it was written spelled as today, so
    that a run started by an earlier version resumes; the values are left as they are."""
    for where, old, new in RENAMED_KEYS:
        d = manifest
        for k in where:
            d = d.get(k) if isinstance(d, dict) else None
        if isinstance(d, dict) and old in d and new not in d:
            d[new] = d.pop(old)
    return manifest


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to ``path`` atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunFolder:
    """Paths and atomic transitions of one output folder (see the module docstring)."""

    def __init__(self, out):
        self.out = Path(out)
        self.state = self.out / STATE

    # ------------------------------------------------------------ paths
    def video_dir(self, name: str) -> Path:
        return self.out / name

    def partial_dir(self, name: str) -> Path:
        return self.state / "partial" / name

    def marker(self, name: str) -> Path:
        return self.state / "done" / f"{name}.json"

    def failure(self, name: str) -> Path:
        return self.state / "failed" / f"{name}.json"

    # ------------------------------------------------------------ set-up
    def open(self, manifest: dict, overwrite: bool, names: Iterable[str]) -> None:
        """Create the folder or check that it holds a compatible run; ``overwrite`` redoes ``names``."""
        for sub in ("partial", "done", "failed"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        run_file = self.state / "run.json"
        manifest = json.loads(json.dumps(manifest))  # as it reads back (tuples -> lists)
        if run_file.exists() and not overwrite:
            old = upgrade_manifest(json.loads(run_file.read_text()))
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            if diff:
                raise InputError(f"{self.out} holds a run with other settings ({', '.join(diff)} differ), "
                                 "so resuming would mix two runs.",
                                 "Choose another --out, or pass --overwrite to redo the selected videos.")
        if overwrite:
            for n in names:
                self.discard(n)
        write_json_atomic(run_file, manifest)

    def is_done(self, name: str) -> bool:
        """A marker exists and every frame it lists is in ``DIR/<video>``."""
        m = self.marker(name)
        if not m.is_file():
            return False
        try:
            rec = json.loads(m.read_text())
        except (OSError, ValueError):
            return False
        d = self.video_dir(name)
        return all((d / f"{f}.png").is_file() for f in rec.get("frame_names", [None]))

    def done_record(self, name: str) -> Optional[dict]:
        return json.loads(self.marker(name).read_text()) if self.is_done(name) else None

    def failure_record(self, name: str) -> Optional[dict]:
        f = self.failure(name)
        return json.loads(f.read_text()) if f.is_file() else None

    # ------------------------------------------------------------ one video
    def reset(self, name: str) -> Path:
        """Remove whatever an unfinished attempt left in ``partial/``; return an empty ``partial/<video>``.
        ``DIR/<video>`` is left alone: files there are replaced one by one at :meth:`commit`."""
        p = self.partial_dir(name)
        if p.is_dir():
            shutil.rmtree(p)
        p.mkdir(parents=True)
        return p

    def discard(self, name: str) -> None:
        """Forget a video's result (``--overwrite``): the label maps its marker lists are removed, and its
        folder if nothing else is left; files VidSeg did not write there are kept."""
        rec = None
        if self.marker(name).is_file():
            try:
                rec = json.loads(self.marker(name).read_text())
            except (OSError, ValueError):
                rec = None
        self.marker(name).unlink(missing_ok=True)
        d = self.video_dir(name)
        for f in (rec or {}).get("frame_names", []):
            (d / f"{f}.png").unlink(missing_ok=True)
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
        self.reset(name)

    def commit(self, name: str, record: dict, frame_size) -> None:
        """Verify ``partial/<video>``, move it to ``DIR/<video>`` and write the marker (atomic steps)."""
        from ..metrics.io import read_label_png

        part = self.partial_dir(name)
        for f in record["frame_names"]:
            p = part / f"{f}.png"
            if not p.is_file():
                raise RuntimeError(f"output {p.name} of video {name!r} was not written")
            if read_label_png(p).shape != tuple(frame_size):
                raise RuntimeError(f"output {p.name} of video {name!r} has the wrong size")
        final = self.video_dir(name)
        if final.is_dir():  # an earlier attempt's label maps, or the user's files: only the label maps are replaced
            for f in record["frame_names"]:
                os.replace(part / f"{f}.png", final / f"{f}.png")
            shutil.rmtree(part)
        else:
            os.replace(part, final)  # one atomic step
        self.failure(name).unlink(missing_ok=True)
        write_json_atomic(self.marker(name), record)

    def record_failure(self, name: str, error: str) -> dict:
        rec = {"video": name, "status": "failed", "error": error, "time": time.time()}
        write_json_atomic(self.failure(name), rec)
        return rec


def check_out_folder(out: Path, root: Path, inputs: Iterable = ()) -> None:
    """Refuse an output folder inside (or containing) the dataset or another input (``inputs``: annotations,
    a video list, the model), a file, a foreign non-empty folder or an unwritable one: the checks of
    :mod:`vidseg_core.output_dir` that every command uses, plus the dataset run's own rule (a non-empty
    folder must hold an earlier dataset run, which is resumed)."""
    check_outside_inputs(out, [root, *inputs], "output folder")
    check_writable(out, "output folder")
    if out.is_dir() and any(out.iterdir()) and not (out / STATE).is_dir():
        raise OutputError(f"The output folder {out} is not empty and holds no VidSeg dataset run.",
                          "Choose an empty or new folder (a folder of an earlier dataset run is resumed).")


class Progress:
    """One line per finished video on stderr: videos and frames done, rate and time left."""

    def __init__(self, videos: int, frames: int, quiet: bool = False, stream=None):
        self.videos, self.frames = videos, frames
        self.done_videos = self.done_frames = 0
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()

    def video(self, record: Dict) -> None:
        self.done_videos += 1
        self.done_frames += int(record.get("frames", 0))
        if self.quiet:
            return
        el = time.perf_counter() - self.t0
        fps = self.done_frames / el if el > 0 else 0.0
        left = (self.frames - self.done_frames) / fps if fps > 0 else float("nan")
        status = "ok" if record.get("status") == "done" else f"FAILED: {record.get('error', '')[:120]}"
        print(f"[{self.done_videos}/{self.videos} videos, {self.done_frames}/{self.frames} frames, "
              f"{fps:.2f} frames/s, ~{left:.0f} s left] {record['video']}: {status}", file=self.stream, flush=True)


def pending(folder: RunFolder, names: List[str]) -> List[str]:
    """The names without a valid completion marker."""
    return [n for n in names if not folder.is_done(n)]
