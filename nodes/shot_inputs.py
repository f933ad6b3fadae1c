"""Shots of an edited video in the nodes: the cut inputs, the ``VIDSEG_SHOTS`` value and its info line.

The inputs (Segment Video, Detect Cuts): ``cuts`` auto / off / list, ``cut_frames`` (the list), the link
threshold and the seam overlap, and (Detect Cuts) the frame detector's thresholds; they become a
:class:`~vidseg_core.shots.ShotSettings`.  The ``VIDSEG_SHOTS`` value is a plain dict (keys in
:mod:`.sockets`): Segment Video's is ``summary.shots`` of its run, Detect Cuts' the cuts on the frames.
"""
from __future__ import annotations

import re
from dataclasses import asdict
from typing import List, Optional

from ..vidseg_core.errors import InputError
from ..vidseg_core.shots import ShotSettings, shots_from_cuts
from .schema import Combo, Float, Int, String

CUT_CHOICES = ("auto", "off", "list")
CUTS_TOOLTIP = ("Scene cuts of an edited video: auto = detect them on the frames (and on the features), off = one "
                "shot (the paper), list = the frames given in cut_frames. Each shot gets its own KMeans; a scene "
                "that comes back gets its labels back.")
CUT_FRAMES_TOOLTIP = ("With cuts = list: the first frames of the new shots, e.g. '120, 300' (frame numbers of the "
                      "input, 1..T-1). Must be empty unless cuts is list (the node refuses rather than ignore it).")
LINK_TOOLTIP = ("A new shot's cluster takes a label seen before when the cosine similarity of the two cluster "
                "centres is at least this (1 = every shot gets new labels).")
SEAM_TOOLTIP = ("Frames each batch shares with the one before in the same shot; their labels decide the next "
                "batch's label ids (0 = off, the default; must be below the batch size).")
DEFAULT_SHOTS = ShotSettings()


def cut_inputs() -> tuple:
    """The edited-video inputs (optional, after every other input: saved workflows keep their widgets)."""
    return (
        Combo("cuts", CUT_CHOICES, CUTS_TOOLTIP, default="auto", optional=True),
        String("cut_frames", "", CUT_FRAMES_TOOLTIP, optional=True),
        Float("link_threshold", DEFAULT_SHOTS.link_threshold, -1.0, 1.0, 0.01, LINK_TOOLTIP, optional=True,
              advanced=True),
        Int("seam_overlap", 0, 0, 63, SEAM_TOOLTIP, optional=True, advanced=True),
    )


def parse_cut_frames(text) -> List[int]:
    """``cut_frames`` ("120, 300" or "120 300") -> sorted frame numbers; a readable error otherwise."""
    tokens = [t for t in re.split(r"[,;\s]+", str(text or "").strip()) if t]
    bad = [t for t in tokens if not re.fullmatch(r"\d+", t)]
    if bad:
        raise InputError(f"cut_frames {str(text)!r}: {', '.join(repr(b) for b in bad)} is not a frame number.",
                         "Write the first frames of the new shots as whole numbers, e.g. '120, 300'.")
    return sorted({int(t) for t in tokens})


def shot_settings(cuts: str = "auto", cut_frames: str = "", link_threshold: float = 0.8, seam_overlap: int = 0,
                  **detector) -> ShotSettings:
    """The :class:`ShotSettings` of the node inputs, checked (:func:`check_video` checks them against the
    video once its length is known)."""
    if cuts not in CUT_CHOICES:
        raise InputError(f"cuts {cuts!r} is not one of {', '.join(CUT_CHOICES)}.", "Choose auto, off or list.")
    frames = parse_cut_frames(cut_frames)
    if cuts == "list" and not frames:
        raise InputError("cuts is 'list' but cut_frames gives no frame.",
                         "Write the first frames of the new shots in cut_frames, e.g. '120, 300', or choose cuts "
                         "auto (detect them) or off (one shot).")
    if cuts != "list" and frames:
        raise InputError(f"cut_frames gives {', '.join(map(str, frames))} but cuts is {cuts!r}, which would "
                         "ignore them.", "Choose cuts = list to cut there, or clear cut_frames.")
    if 0 in frames:
        raise InputError("cut_frames lists frame 0, which starts the video, not a new shot.",
                         "Give the first frame of each new shot (1 or later), e.g. '120, 300'.")
    s = ShotSettings(cuts=frames if cuts == "list" else cuts, link_threshold=float(link_threshold),
                     overlap=int(seam_overlap), **detector)
    s.check()
    return s


def check_video(settings: ShotSettings, num_frames: int, batch_size: Optional[int] = None) -> None:
    """The cut frames lie inside the video and the seam overlap is below the batch size (before any work)."""
    from ..vidseg_core.shots import plan_shot_batches

    settings.check()
    cuts = [] if isinstance(settings.cuts, str) else [int(c) for c in settings.cuts]
    late = [c for c in cuts if c >= num_frames]
    if late:
        raise InputError(f"cut_frames {', '.join(map(str, late))} lie past the video's last frame "
                         f"{num_frames - 1} ({num_frames} frames).",
                         f"Give first frames of new shots in 1..{num_frames - 1}.")
    shots = shots_from_cuts(num_frames, cuts)
    if batch_size is not None:
        plan_shot_batches(shots, int(batch_size), settings.overlap)


def shots_value(summary_shots: dict, num_frames: int, settings: ShotSettings) -> dict:
    """The ``VIDSEG_SHOTS`` value: ``summary_shots`` (as :meth:`ShotContext.summary` makes it) with the
    video's length and the settings (a new dict: the summary is left as it is)."""
    d = dict(summary_shots)
    d["num_frames"] = int(num_frames)
    d["settings"] = settings_dict(settings)
    return d


def settings_dict(settings: ShotSettings) -> dict:
    d = asdict(settings)
    if not isinstance(settings.cuts, str):
        d["cuts"] = [int(c) for c in settings.cuts]
    return d


def require_shots(shots, num_frames: int) -> dict:
    """A ``VIDSEG_SHOTS`` value that belongs to a video of ``num_frames`` frames."""
    keys = ("cut_detection", "frame_cuts", "num_frames")
    if not isinstance(shots, dict) or any(k not in shots for k in keys):
        raise InputError(f"Expected VidSeg shots (VIDSEG_SHOTS), got {type(shots).__name__}.",
                         "Connect the shots output of Detect Cuts or Segment Video.")
    if int(shots["num_frames"]) != int(num_frames):
        raise InputError(f"The shots belong to a video of {shots['num_frames']} frames, these features to one of "
                         f"{num_frames}.", "Detect the cuts on the same frames the features were extracted from.")
    shots_from_cuts(num_frames, shots["frame_cuts"])  # inside the video
    return shots


def settings_of(shots: dict) -> ShotSettings:
    """The :class:`ShotSettings` a stage node runs with for a ``VIDSEG_SHOTS`` value: the cuts found on the
    frames (or given) are fixed; with detection on the frames the feature check runs as well."""
    given = dict(shots.get("settings") or {})
    source = shots["cut_detection"]
    cuts = "auto" if source in ("frames", "features") else "off" if source == "off" else list(shots["frame_cuts"])
    keep = {k: given[k] for k in ("threshold", "ratio", "window", "gradual", "feature_collapse", "link_threshold",
                                  "overlap") if k in given}
    s = ShotSettings(cuts=cuts, **keep)
    s.check()
    return s


def describe_shots(shots: Optional[dict]) -> str:
    """One info line: the cuts (with where they were found) and the shots each label appears in."""
    if not shots:
        return "cuts: none"
    if shots.get("cut_detection") == "off":
        head = "cuts: off (one shot)"
    else:
        frame, feature = set(shots.get("frame_cuts", [])), set(shots.get("feature_cuts", []))
        user = shots.get("cut_detection") == "user"
        where = [f"{c} ({'user' if user and c in frame else 'frames' if c in frame else 'features'})"
                 for c in shots.get("cuts", [])]
        head = (f"cuts: {len(where)} at frame {', '.join(where)}" if where else "cuts: none found") + \
            f"; {len(shots.get('shots', [])) or 1} shot(s)"
    per = shots.get("label_shots") or {}
    if per:
        head += "; labels per shot: " + ", ".join(
            f"{v} in {'shot' if len(s) == 1 else 'shots'} {','.join(map(str, s))}"
            for v, s in sorted(per.items(), key=lambda kv: int(kv[0])))
    return head
