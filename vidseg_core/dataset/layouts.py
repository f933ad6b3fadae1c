"""Reading benchmark datasets in place: DAVIS 2017, DAVIS 2016, VSPW, and plain folders of clips.

Layouts (docs/design/dataset_runs.md#layouts):

* ``davis2017``: ``ROOT/JPEGImages/<res>/<video>/*.jpg``, ``ROOT/Annotations/<res>/<video>/*.png``
  (indexed, 0 = background, 1..N objects, 255 = void), ``ROOT/ImageSets/2017/<split>.txt``;
* ``davis2016``: the same DAVIS 2017 package read through ``ROOT/ImageSets/2016/<split>.txt`` (the 2016
  package's own ImageSets hold per-frame path pairs, hence XMem / Cutie do the same); DAVIS 2016 is a
  single-object task, so every non-zero annotation value is the one foreground object 1 (this also reads
  the 2016 package's 0/255 masks as 0/1);
* ``vspw``: ``ROOT/<split>.txt``, ``ROOT/data/<video>/origin/*.jpg``, ``ROOT/data/<video>/mask/*.png``,
  with the VSPW remap (0 "others" and 255 "void" -> 255, 1..124 -> 0..123) applied to the ground truth and
  to the reference, so predictions come out in the 124-class evaluation space;
* ``folders``: one sub-folder of frames or one video file per clip in ``ROOT``; with ``annotations``,
  ``ANN/<clip>/*.png`` (ground truth per frame, named like the frames; the first is the reference) or
  ``ANN/<clip>.png`` (a reference mask of the clip's first selected frame only, not scored).

Everything is checked before any work starts; a missing or malformed folder or file is an
:class:`~vidseg_core.errors.InputError` naming it.  Nothing is ever written into ``ROOT``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..frame_order import list_frame_files
from ..video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

LAYOUTS = ("davis2017", "davis2016", "vspw", "folders")
DEFAULT_SPLIT = {"davis2017": "val", "davis2016": "val", "vspw": "val"}
#: metrics scored per layout (names of :data:`vidseg_core.metrics.METRICS`)
DEFAULT_METRICS = {"davis2017": ("jf",), "davis2016": ("jf",), "vspw": ("miou", "vc8", "vc16"),
                   "folders": ("jf", "vc8", "vc16")}
VSPW_CLASSES = 124


@dataclass(frozen=True)
class Video:
    """One clip of a dataset: where its frames and its annotations are."""

    name: str
    frames: str                       # folder of frames or a video file
    num_frames: int
    annotations: Optional[str] = None  # folder of GT PNGs named like the frames
    reference_path: Optional[str] = None   # a single reference PNG of the first frame (folders layout)


@dataclass
class Dataset:
    """A dataset read in place: its videos and how its labels are scored."""

    layout: str
    root: str
    split: Optional[str]
    videos: List[Video]
    metrics: Sequence[str]
    #: ground-truth transform before use as reference or for scoring: "none", "vspw", "binary"
    gt_transform: str = "none"
    #: classes for mIoU (None = inferred from the ground truth)
    num_classes: Optional[int] = None
    #: void / ignore value of the ground truth (after the transform)
    void: int = 255
    notes: List[str] = field(default_factory=list)

    @property
    def total_frames(self) -> int:
        return sum(v.num_frames for v in self.videos)


def transform_gt(labels: np.ndarray, kind: str) -> np.ndarray:
    """Ground truth (or a reference read from it) in the space the predictions are written in."""
    if kind == "vspw":
        from ..metrics.labels import vspw_remap

        return vspw_remap(labels)
    if kind == "binary":
        return (np.asarray(labels) != 0).astype(np.int64)
    return np.asarray(labels)


def _images(folder: Path, exts=IMAGE_EXTENSIONS) -> List[Path]:
    return list_frame_files(folder, exts)  # natural order, one file per stem


def _need_dir(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{what} {path} is missing{' (it is a file)' if path.exists() else ''}.", fix)
    return path


def _read_list(path: Path, what: str, fix: str) -> List[str]:
    if not path.is_file():
        raise InputError(f"{what} {path} is missing.", fix)
    try:
        names = [ln.strip() for ln in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read {what} {path}: {exc}.", "Give a text file with one video name per line.") from exc
    names = [n for n in names if n and not n.startswith("#")]
    bad = [n for n in names if " " in n or "/" in n]
    if bad:
        raise InputError(f"{path} is malformed: line {bad[0]!r} is not a video name.",
                         "Use one video name per line (DAVIS 2016's own ImageSets hold frame path pairs: "
                         "use the DAVIS 2017 package's ImageSets/2016 with --layout davis2016).")
    if not names:
        raise InputError(f"{what} {path} lists no video.", "Put one video name per line.")
    return _unique(names, str(path))


def _unique(names: List[str], where: str) -> List[str]:
    """``names`` without repeats (first occurrence kept); a repeat is said, never run or scored twice."""
    seen = list(dict.fromkeys(names))
    if len(seen) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        warnings.warn(f"{where} names {', '.join(twice[:5])}{' ...' if len(twice) > 5 else ''} more than once: "
                      "each video is segmented and scored once")
    return seen


def _paired_video(name: str, frames_dir: Path, ann_dir: Path, frame_exts=(".jpg", ".jpeg", ".png")) -> Video:
    fix = "Restore the video's folder, or leave the video out with --videos."
    _need_dir(frames_dir, f"Frames folder of video {name!r}:", fix)
    _need_dir(ann_dir, f"Annotations folder of video {name!r}:", fix)
    frames = _images(frames_dir, frame_exts)
    if not frames:
        raise InputError(f"The frames folder {frames_dir} of video {name!r} holds no images.", fix)
    anns = {p.stem for p in _images(ann_dir, (".png",))}
    if not anns:
        raise InputError(f"The annotations folder {ann_dir} of video {name!r} holds no PNG.", fix)
    if not anns & {p.stem for p in frames}:
        raise InputError(f"No annotation of video {name!r} ({ann_dir}) is named like one of its frames "
                         f"({frames[0].name}, ...).", "Annotations must be named like the frames (00000.png for 00000.jpg).")
    return Video(name, str(frames_dir), len(frames), annotations=str(ann_dir))


def _davis(root: Path, year: str, split: str, resolution: str) -> List[Video]:
    names = _read_list(root / "ImageSets" / year / f"{split}.txt", f"The DAVIS {year} split file",
                       f"Point ROOT at the DAVIS 2017 package (it holds ImageSets/{year}/{split}.txt), "
                       "or choose another --split.")
    jpeg = _need_dir(root / "JPEGImages" / resolution, "The DAVIS frames folder",
                     "Point ROOT at the DAVIS folder that holds JPEGImages/ and Annotations/ (or set --resolution).")
    ann = _need_dir(root / "Annotations" / resolution, "The DAVIS annotations folder",
                    "Point ROOT at the DAVIS folder that holds JPEGImages/ and Annotations/ (or set --resolution).")
    return [_paired_video(n, jpeg / n, ann / n) for n in names]


def _vspw(root: Path, split: str) -> List[Video]:
    names = _read_list(root / f"{split}.txt", "The VSPW split file",
                       "Point ROOT at the VSPW folder (VSPW_480p) holding train.txt, val.txt, test.txt and data/.")
    data = _need_dir(root / "data", "The VSPW data folder", "Point ROOT at the VSPW folder that holds data/.")
    return [_paired_video(n, data / n / "origin", data / n / "mask") for n in names]


def _count_frames(path: Path) -> int:
    from ..video_io import FrameSource

    with FrameSource(path) as src:
        return len(src)


def _folders(root: Path, annotations: Optional[Path]) -> List[Video]:
    if annotations is not None:
        _need_dir(annotations, "The annotations folder", "Give --annotations a folder of <clip>/ or <clip>.png masks.")
    videos = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            frames = _images(p)
            if not frames:
                raise InputError(f"The clip folder {p} holds no images.", "Put the clip's frames in it, or remove it.")
            n = len(frames)
        elif p.suffix.lower() in VIDEO_EXTENSIONS:
            n = _count_frames(p)
        else:
            continue
        ann = ref = None
        if annotations is not None:
            if (annotations / p.stem).is_dir():
                ann = str(annotations / p.stem)
            elif (annotations / f"{p.stem}.png").is_file():
                ref = str(annotations / f"{p.stem}.png")
        videos.append(Video(p.stem if p.is_file() else p.name, str(p), n, annotations=ann, reference_path=ref))
    if not videos:
        raise InputError(f"{root} holds no clip (no sub-folder of frames, no video file).",
                         "Put one folder of frames or one video file per clip in ROOT.")
    names = [v.name for v in videos]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"Clip names {dup} appear twice in {root} (a folder and a video file?).",
                         "Give every clip its own name.")
    return videos


def read_dataset(root, layout: str, split: Optional[str] = None, resolution: str = "480p",
                 annotations=None) -> Dataset:
    """The videos of ``root`` in ``layout`` (see the module docstring), all checked before any work."""
    if layout not in LAYOUTS:
        raise InputError(f"Unknown layout {layout!r}.", f"Use one of {', '.join(LAYOUTS)}.")
    root = Path(root)
    _need_dir(root, "The dataset folder", "Give the dataset's root folder as ROOT.")
    if layout != "folders" and annotations is not None:
        raise InputError("--annotations applies to --layout folders only.", f"{layout} has its own annotations.")
    if layout == "folders":
        if split is not None:
            raise InputError("--split does not apply to --layout folders.", "Select clips with --videos instead.")
        videos = _folders(root, Path(annotations) if annotations is not None else None)
        return Dataset(layout, str(root), None, videos, DEFAULT_METRICS[layout])
    split = split or DEFAULT_SPLIT[layout]
    if layout == "vspw":
        return Dataset(layout, str(root), split, _vspw(root, split), DEFAULT_METRICS[layout], gt_transform="vspw",
                       num_classes=VSPW_CLASSES)
    year = "2017" if layout == "davis2017" else "2016"
    return Dataset(layout, str(root), split, _davis(root, year, split, resolution), DEFAULT_METRICS[layout],
                   gt_transform="binary" if layout == "davis2016" else "none")


def select_videos(dataset: Dataset, spec: Optional[str]) -> Dataset:
    """Keep the videos named by ``spec``: comma-separated names, or a file with one name per line."""
    if not spec:
        return dataset
    path = Path(spec)
    names = _read_list(path, "The video list", "Give names separated by commas or a list file.") if path.is_file() \
        else _unique([n.strip() for n in spec.split(",") if n.strip()], "--videos")
    if not names:
        raise InputError(f"--videos {spec!r} names no video.",
                         "Give video names separated by commas (e.g. --videos bear,camel), or leave --videos out "
                         "for every video of the set.")
    known = {v.name: v for v in dataset.videos}
    unknown = [n for n in names if n not in known]
    if unknown:
        shown = ", ".join(list(known)[:5]) + (", ..." if len(known) > 5 else "")
        raise InputError(f"--videos names {unknown[:5]} that are not in the {dataset.layout} set ({shown}).",
                         "Check the names (or the list file's path).")
    dataset.videos = [known[n] for n in names]
    return dataset
