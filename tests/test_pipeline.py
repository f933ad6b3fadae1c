import numpy as np
import pytest
import torch

from vidseg_core.backbones import load_backbone
from vidseg_core.errors import InputError
from vidseg_core.pipeline import SegmentSettings, VideoSegmenter, segment_video


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 67, 131, 3, generator=g)  # odd size: work size 64x128, grid 4x8
    x[:, :, :60] *= 0.2  # a dark region and a bright one
    return x


@pytest.mark.parametrize("mode", ["fast", "quality"])
@pytest.mark.parametrize("name", ["tiny-sd", "tiny-svd"])
def test_one_label_per_pixel_at_input_size(name, mode, frames):
    bb = load_backbone(name, device="cpu", precision="fp32")
    labels, coarse, summary = segment_video(bb, frames, SegmentSettings(num_clusters=3, batch_size=3, mode=mode),
                                            keep_coarse=True)
    assert labels.shape == (5, 67, 131) and labels.dtype == torch.long
    assert coarse.shape == (5, 4, 8)
    values = set(summary.table.values)
    assert set(labels.unique().tolist()) <= values and set(coarse.unique().tolist()) <= values
    assert summary.num_frames == 5 and summary.grid == (4, 8) and summary.work_size == (64, 128)
    assert set(summary.seconds) == {"read", "features", "coarse", "upsample", "shots"}


def test_reference_names_clusters_and_later_reference_frame(frames):
    bb = load_backbone("tiny-sd", device="cpu", precision="fp32")
    ref = np.zeros((67, 131), np.uint8)
    ref[:, 60:] = 9
    for frame in (0, 4):  # frame 4 lies in the tail batch: its batch is computed first
        labels, summary = segment_video(bb, frames, SegmentSettings(num_clusters=4, batch_size=3, mode="fast",
                                                                   reference_mask=ref, reference_frame=frame))
        assert set(summary.table.values) <= {0, 9}
        assert set(labels.unique().tolist()) <= {0, 9}


def test_progress_and_cancel(frames):
    bb = load_backbone("tiny-sd", device="cpu", precision="fp32")
    seen = []
    segment_video(bb, frames, SegmentSettings(num_clusters=2, batch_size=2, mode="fast"),
                  progress=lambda d, n, s: seen.append((d, n, s)))
    assert [x for x in seen if x[2] == "batch"] == [(1, 3, "batch"), (2, 3, "batch"), (3, 3, "batch")]

    class Stop(Exception):
        pass

    def cancel(d, n, s):
        raise Stop()

    seg = VideoSegmenter(bb, SegmentSettings(num_clusters=2, batch_size=2, mode="fast"), cancel)
    it = seg.run(lambda a, b: frames[a:b], 5, (67, 131))
    with pytest.raises(Stop):
        next(it)


def test_bad_settings(frames):
    bb = load_backbone("tiny-sd", device="cpu", precision="fp32")
    with pytest.raises(InputError, match="Unknown mode"):
        VideoSegmenter(bb, SegmentSettings(mode="turbo"))
    with pytest.raises(InputError, match="Reference frame"):
        segment_video(bb, frames, SegmentSettings(mode="fast", reference_frame=9))
    with pytest.raises(InputError, match="no frames|\\[T,H,W,3\\]"):
        segment_video(bb, frames[:0], SegmentSettings(mode="fast"))
