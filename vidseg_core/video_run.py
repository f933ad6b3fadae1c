"""Segmenting one video with its outputs written while the next batch is computed.

Used by the ``segment`` command (label maps, overlay video) and by the dataset runner (label maps per
video); each gives what it writes per batch.
"""
from __future__ import annotations

import torch


def make_segmenter(backbone, settings, progress=None, naming=None):
    """A :class:`~vidseg_core.pipeline.VideoSegmenter`, or a
    :class:`~vidseg_core.naming.segmenter.NamingSegmenter` when ``naming`` is given."""
    from .pipeline import VideoSegmenter

    if naming is None:
        return VideoSegmenter(backbone, settings, progress)
    from .naming.segmenter import NamingSegmenter

    return NamingSegmenter(backbone, settings, progress, naming=naming)


def labels_at_size(labels, size):
    """Label maps ``[n,h,w]`` brought back to ``size`` (the input's, after a --max-side cap) by nearest."""
    if tuple(labels.shape[1:]) == tuple(size):
        return labels
    return torch.nn.functional.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")[:, 0].long()


def segment_streaming(segmenter, source, prepare, *, serial: bool = False, skip_upsample=None):
    """Run ``segmenter`` over ``source`` (a :class:`~vidseg_core.video_io.FrameSource`) batch by batch.

    ``prepare(result)`` is called here for each :class:`~vidseg_core.pipeline.BatchResult` (read what the
    writing needs: the source is not thread-safe) and returns the job that writes the batch; the jobs run on
    a :class:`~vidseg_core.background_writer.BackgroundWriter` while the next batch is computed (``serial``: in
    turn).  On a failure what was computed is still written and the first error is raised.  Returns the writer
    (its ``busy_seconds`` / ``wait_seconds``)."""
    from .background_writer import BackgroundWriter

    with BackgroundWriter(0 if serial else 2) as writer:
        for res in segmenter.run(source.read, len(source), source.frame_size, skip_upsample=skip_upsample):
            writer.submit(prepare(res))
    return writer
