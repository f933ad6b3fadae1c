"""Detect Cuts (``VidSegDetectCuts``): the shots of an edited video, from its frames (docs/edited_videos.md).

The frames (an IMAGE batch, or a core VIDEO decoded batch by batch) go through
:class:`~vidseg_core.shots.FrameCutDetector` (or the cuts are given, or off); the output ``VIDSEG_SHOTS``
feeds KMeans Init and KNN Context Model, whose batches then follow the shots and whose labels are linked
across them.  The feature check runs later, in KNN Context Model (it needs the features).
"""
from __future__ import annotations

import torch

from ..vidseg_core.shots import FrameCutDetector, frame_histograms, shots_from_cuts
from .comfy_adapters import bridge
from .comfy_adapters.video import VIDEO, frames_or_video
from .schema import Float, Int, Node, Out, Socket
from .shot_inputs import DEFAULT_SHOTS, check_video, cut_inputs, describe_shots, settings_dict, shot_settings
from .sockets import VIDSEG_SHOTS

D = DEFAULT_SHOTS


class VidSegDetectCuts:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegDetectCuts", "Detect Cuts (VidSeg)", "VidSeg/stages",
            "The shots of an edited video: hard cuts and dissolves found on the frames' colour histograms (or the "
            "cuts given, or off). Connect the shots to KMeans Init and KNN Context Model: batches then never span a "
            "cut, each shot gets its own KMeans, and a scene that comes back gets its labels back.",
            inputs=(
                Socket("frames", "IMAGE", "The video as an IMAGE batch [T,H,W,3] (or connect video).", optional=True),
                Socket("video", VIDEO, "Or: a VIDEO (core Load Video / Trim Video), read batch by batch. Connect "
                                       "frames or video, not both.", optional=True),
            ) + cut_inputs() + (
                Int("batch_size", 14, 1, 64, "Frames read at a time (memory only: the cuts do not depend on it).",
                    optional=True, advanced=True),
                Float("threshold", D.threshold, 0.0, 1.0, 0.01, "Hard cut: colour-histogram distance to the frame "
                      "before (0..1) at least this ...", optional=True, advanced=True),
                Float("ratio", D.ratio, 1.0, 100.0, 0.1, "... and at least this many times the mean distance of "
                      "the window frames on each side.", optional=True, advanced=True),
                Int("window", D.window, 1, 64, "Frames on each side a hard cut is compared with.", optional=True,
                    advanced=True),
                Float("gradual", D.gradual, 0.0, 1.0, 0.01, "Dissolve: a run of frames each scoring at least this, "
                      "whose two ends differ by the threshold; one cut in its middle.", optional=True,
                      advanced=True),
                Float("feature_collapse", D.feature_collapse, 0.0, 100.0, 0.05, "With cuts auto, KNN Context Model "
                      "also cuts where a frame's feature distance to the frame before is this many times the shot's "
                      "median (0 = off).", optional=True, advanced=True),
            ),
            outputs=(
                Out("shots", VIDSEG_SHOTS, "The cuts and shots (a dict), for KMeans Init and KNN Context Model."),
                Out("info", "STRING", "The cuts found and the highest score that was not a cut (to tune the "
                                      "threshold)."),
            ),
            function="detect", search_aliases=("scene cut", "shot boundary", "scene detection", "edited video"))

    def detect(self, frames=None, video=None, cuts="auto", cut_frames="", link_threshold=D.link_threshold,
               seam_overlap=0, batch_size=14, threshold=D.threshold, ratio=D.ratio, window=D.window,
               gradual=D.gradual, feature_collapse=D.feature_collapse):
        settings = shot_settings(cuts, cut_frames, link_threshold, seam_overlap, threshold=float(threshold),
                                 ratio=float(ratio), window=int(window), gradual=float(gradual),
                                 feature_collapse=float(feature_collapse))
        source = frames_or_video(frames, video, "Detect Cuts")
        try:
            n = len(source)
            check_video(settings, n)
            found, scores, note = [], None, ""
            if cuts == "auto":
                progress = bridge.Progress(n)
                hists = []
                for a in range(0, n, int(batch_size)):
                    progress(a, n)
                    hists.append(frame_histograms(source.read(a, min(a + int(batch_size), n))))
                progress(n, n)
                detector = FrameCutDetector(settings)
                found = detector.detect(torch.cat(hists))
                scores = detector.scores
        finally:
            source.close()
        frame_cuts = found if cuts == "auto" else [] if cuts == "off" else list(settings.cuts)
        source_name = {"auto": "frames", "off": "off", "list": "user"}[cuts]
        shots = {"cut_detection": source_name, "num_frames": n, "cuts": list(frame_cuts),
                 "frame_cuts": list(frame_cuts), "feature_cuts": [],
                 "shots": [{"index": s.index, "start": s.start, "stop": s.stop}
                           for s in shots_from_cuts(n, frame_cuts)],
                 "label_shots": {}, "settings": settings_dict(settings)}
        if scores is not None and n > 1:
            rest = scores.clone()
            rest[0] = -1
            if frame_cuts:
                rest[frame_cuts] = -1
            t = int(rest.argmax())
            if rest[t] >= 0:
                note = f"; highest score that is not a cut: {float(rest[t]):.3f} at frame {t}"
        return shots, f"{n} frames; " + describe_shots(shots) + note


NODES = (VidSegDetectCuts,)
