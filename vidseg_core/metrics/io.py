"""Reading label-map sequences from folders of PNGs (one file per frame).

Frames are the ``*.png`` files of a folder in natural (numeric-aware) name
order (:mod:`vidseg_core.frame_order`).  A prediction folder is paired with its
ground truth by file name, or else by the numbers in the names
(:func:`pair_frames`).  Each PNG is read as its
raw stored values - palette indices for mode ``P``, grey levels for ``L`` /
``1`` / 16-bit ``I;16`` - never through a palette-to-RGB conversion.  Colour
(RGB/RGBA) PNGs are rejected: their colours are not label ids.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..frame_order import frame_number, list_frame_files

#: PIL modes whose stored values are label ids.
LABEL_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L")


def list_frames(folder) -> List[Path]:
    """The ``*.png`` files of ``folder`` in frame order (:mod:`vidseg_core.frame_order`; InputError if missing
    or empty, or if two share a stem)."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"Folder not found: {folder}.", "Check the path (it must be a folder of PNG label maps).")
    if not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder.", "Pass the folder that holds one PNG per frame.")
    files = list_frame_files(folder, (".png",))
    if not files:
        raise InputError(f"No PNG files in {folder}.",
                         "Put one PNG label map per frame in the folder (e.g. 00000.png, 00001.png, ...).")
    return files


def read_label_png(path) -> np.ndarray:
    """One PNG as a 2-D array of its raw stored values (palette indices / grey levels)."""
    from PIL import Image  # lazy

    path = Path(path)
    if not path.exists():
        raise InputError(f"The label map {path} does not exist.", "Check the path (and the file name's extension).")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a PNG label map.", "Give the path of one PNG file.")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in LABEL_MODES:
                raise InputError(
                    f"{path.name} is a {mode} image; label maps must be palette (P) or greyscale (L) PNGs.",
                    "Save the labels as indices (a palettised or greyscale PNG), not as colours; "
                    "colour-coded masks must be converted to ids with their palette first.")
            arr = np.asarray(im)
    except InputError:
        raise
    except (OSError, ValueError) as exc:  # unreadable / truncated file
        raise InputError(f"Cannot read {path}: {exc}.", "Re-export the file as a valid PNG.") from exc
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim != 2:
        raise InputError(f"{path.name} has shape {arr.shape}, not a single-channel label map.",
                         "Save one label id per pixel (palette or greyscale PNG).")
    return arr


def read_label_sequence(folder) -> Tuple[np.ndarray, List[str]]:
    """All frames of ``folder`` as ``[T, H, W]`` plus their file names (sizes must agree)."""
    files = list_frames(folder)
    return _read_files(files, folder), [f.name for f in files]


def _read_files(files: Sequence[Path], folder) -> np.ndarray:
    frames = []
    for f in files:
        a = read_label_png(f)
        if frames and a.shape != frames[0].shape:
            raise InputError(
                f"{f.name} is {a.shape[1]}x{a.shape[0]} but {files[0].name} is {frames[0].shape[1]}x{frames[0].shape[0]} (W x H) in {folder}.",
                "All frames of a sequence must have the same size.")
        frames.append(a)
    dtype = np.result_type(*[a.dtype for a in frames])
    return np.stack(frames).astype(dtype, copy=False)


def pair_frames(pred_files: Sequence[Path], gt_files: Sequence[Path], pred_dir=None, gt_dir=None,
                require_all: bool = False) -> List[Tuple[Path, Path]]:
    """``(prediction, ground truth)`` file pairs, matched by file name stem.

    * every ground-truth frame has a prediction of the same stem: paired by name
      (predictions of frames without ground truth, e.g. sparse annotations, are
      not evaluated);
    * only some have one (e.g. a clip segmented over a frame range): those frames
      are paired, with a warning naming how many ground-truth frames are left
      out, unless ``require_all``, which makes it an error;
    * no stem in common: paired by the number in each name (its last run of
      digits, :func:`~vidseg_core.frame_order.frame_number`) in numeric order,
      when both folders hold as many frames and every name holds a number of its
      own (``frame_0.png .. frame_11.png`` with ``00000.png .. 00011.png``); the
      rule and the pairs are printed as a warning;
    * anything else is an error.
    """
    pred_by_stem = {p.stem: p for p in pred_files}
    missing = [g.name for g in gt_files if g.stem not in pred_by_stem]
    pairs = [(pred_by_stem[g.stem], g) for g in gt_files if g.stem in pred_by_stem]
    if not missing:
        return pairs
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    where = f"{pred_dir or 'The prediction folder'} has no prediction for {len(missing)} of the {len(gt_files)} " \
            f"ground-truth frames ({shown})"
    if pairs and not require_all:
        warnings.warn(f"{where}: only the {len(pairs)} frames with a prediction are evaluated.", stacklevel=3)
        return pairs
    if pairs:
        raise InputError(f"{where}; it has {len(pred_files)} PNG frames but {gt_dir or 'the ground truth'} has "
                         f"{len(gt_files)}.", "Give one predicted PNG per ground-truth PNG, named like it "
                                              "(e.g. 00000.png for 00000.png).")
    numbered, why = _pair_by_number(pred_files, gt_files)
    if numbered is None:
        raise InputError(f"No prediction file name in {pred_dir or 'the prediction folder'} matches a ground-truth "
                         f"file name in {gt_dir or 'the ground-truth folder'} ({pred_files[0].name} vs "
                         f"{gt_files[0].name}), and the frames cannot be paired by the numbers in their names: {why}.",
                         "Name each predicted PNG like its ground-truth frame (e.g. 00000.png for 00000.png).")
    ends = [f"{p.name} -> {g.name}" for p, g in numbered]
    shown_pairs = ", ".join(ends if len(ends) <= 4 else ends[:2] + ["..."] + ends[-2:])
    warnings.warn(f"No prediction file name matches a ground-truth file name: the {len(numbered)} frames are paired "
                  f"by the number in their names, in numeric order ({shown_pairs}).", stacklevel=3)
    return numbered


def _pair_by_number(pred_files: Sequence[Path], gt_files: Sequence[Path]):
    """``(pairs, None)`` by the numbers in the names (numeric order), or ``(None, why not)``."""
    if len(pred_files) != len(gt_files):
        return None, f"the predictions are {len(pred_files)} frames, the ground truth {len(gt_files)}"
    ordered = []
    for files, what in ((pred_files, "prediction"), (gt_files, "ground-truth")):
        numbers = {}
        for f in files:
            n = frame_number(f.name)
            if n is None:
                return None, f"the {what} file {f.name} holds no number"
            if n in numbers:
                return None, f"the {what} files {numbers[n].name} and {f.name} hold the same number {n}"
            numbers[n] = f
        ordered.append([numbers[n] for n in sorted(numbers)])
    return list(zip(*ordered)), None


def read_pair(pred_dir, gt_dir, require_all: bool = False) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Prediction and GT sequences paired by file name (:func:`pair_frames`), checked to have the same size.

    Returns ``(pred [T,H,W], gt [T,H,W], file names of the evaluated ground-truth frames)``.
    """
    pairs = pair_frames(list_frames(pred_dir), list_frames(gt_dir), pred_dir, gt_dir, require_all)
    gt_files = [g for _, g in pairs]
    gt = _read_files(gt_files, gt_dir)
    pred = _read_files([p for p, _ in pairs], pred_dir)
    if pred.shape[1:] != gt.shape[1:]:
        raise InputError(
            f"Predicted frames are {pred.shape[2]}x{pred.shape[1]} but ground-truth frames are {gt.shape[2]}x{gt.shape[1]} (W x H).",
            "Resize the predictions to the ground-truth resolution with nearest-neighbour interpolation.")
    return pred, gt, [g.name for g in gt_files]
