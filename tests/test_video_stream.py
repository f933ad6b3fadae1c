"""The streamed video reader, the H.264 writer, the compact label store and the memory guard (core, no ComfyUI).

Videos are made in the test with PyAV; "a full decode" is PyAV decoding every frame to RGB at once.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from tests.helpers.comfy_video_standin import write_test_video  # noqa: E402
from vidseg_core.errors import InputError, OutOfMemoryError  # noqa: E402
from vidseg_core.label_store import LabelStore  # noqa: E402
from vidseg_core.memory_guard import check_fits, float_output_bytes  # noqa: E402
from vidseg_core.video_stream import VideoStream  # noqa: E402
from vidseg_core.video_writer import H264Writer  # noqa: E402

T, H, W, FPS = 30, 48, 64, 12


def _frames(t=T, h=H, w=W):
    rng = np.random.default_rng(0)
    x = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        x[i, :, (2 * i) % w:(2 * i) % w + 8] = 255
        x[i, ..., 1] = 8 * i
        x[i, ..., 2] = rng.integers(0, 60, (h, w))
    return x


def _full_decode(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("v") / "clip.mp4", _frames(), FPS)


def test_batches_equal_a_full_decode_and_only_one_batch_is_held(clip):
    full = _full_decode(clip)
    assert full.shape == (T, H, W, 3)
    with VideoStream(clip) as vs:
        assert len(vs) == T and vs.frame_size == (H, W) and vs.fps == FPS
        got = [vs.read(a, min(T, a + 7)) for a in range(0, T, 7)]
        assert vs.max_held <= 7  # never more than one batch of decoded frames
    x = torch.cat(got)
    assert x.dtype == torch.float32 and x.shape == (T, H, W, 3)
    assert torch.equal(x, torch.from_numpy(full).float() / 255)


def test_rereading_and_reading_backwards_give_the_same_frames(clip):
    full = _full_decode(clip)
    with VideoStream(clip) as vs:
        assert np.array_equal(vs.read_uint8(16, 30), full[16:30])  # forward jump
        assert np.array_equal(vs.read_uint8(20, 30), full[20:30])  # inside the held window: no decoding
        assert np.array_equal(vs.read_uint8(3, 10), full[3:10])  # backwards: seek
        assert np.array_equal(vs.read_uint8(0, 2), full[0:2])
        assert vs.max_held <= 14


@pytest.mark.parametrize("start, duration, first, count", [(1.0, 1.0, 12, 12), (0.5, 0.0, 6, 24), (0.0, 0.25, 0, 3)])
def test_trim_window_selects_frames_by_timestamp(clip, start, duration, first, count):
    full = _full_decode(clip)
    with VideoStream(clip, start, duration) as vs:
        assert len(vs) == count
        assert np.array_equal(vs.read_uint8(0, count), full[first:first + count])


def test_a_bytesio_source_streams_like_a_path(clip):
    data = io.BytesIO(open(clip, "rb").read())
    with VideoStream(data, 1.0) as vs:
        assert len(vs) == 18 and np.array_equal(vs.read_uint8(0, 18), _full_decode(clip)[12:])


def test_bad_sources_and_windows_are_named(tmp_path, clip):
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"hello")
    with pytest.raises(InputError, match="Cannot open not_a_video.mp4 as a video"):
        VideoStream(str(bad))
    with pytest.raises(InputError, match="No frames .* trim window"):
        VideoStream(clip, 10.0, 1.0)
    with VideoStream(clip) as vs, pytest.raises(InputError, match="outside 0:30"):
        vs.read(25, 31)


def test_writer_output_reads_back_batch_by_batch_with_odd_sides_padded(tmp_path):
    frames = _frames(9, 47, 63)
    path = tmp_path / "out.mp4"
    with H264Writer(path, fps=FPS, crf=0) as w:
        w.write(frames[:4])
        w.write(torch.from_numpy(frames[4:]).float() / 255)
    with VideoStream(str(path)) as vs:
        assert len(vs) == 9 and vs.frame_size == (48, 64) and vs.fps == FPS
        back = vs.read_uint8(0, 9)
    # yuv420p loses chroma detail; the image is the same up to that
    assert np.abs(back[:, :47, :63].astype(int) - frames.astype(int)).mean() < 6
    assert np.array_equal(back[:, 47, :63], back[:, 46, :63])  # padded row repeats the last one


def test_writer_removes_its_partial_file_on_error(tmp_path):
    path = tmp_path / "partial.mp4"
    with pytest.raises(RuntimeError):
        with H264Writer(path) as w:
            w.write(np.concatenate([_frames(), _frames()]))  # beyond the encoder's look-ahead: packets are written
            assert path.exists()
            raise RuntimeError("stop")
    assert not path.exists()


@pytest.mark.parametrize("spill", [None, 0])
def test_label_store_round_trip_in_memory_and_spilled(tmp_path, spill):
    labels = torch.randint(0, 21, (10, 6, 8))
    store = LabelStore(10, (6, 8), 20, spill_bytes=spill, spill_dir=str(tmp_path))
    assert store.spilled == (spill == 0) and store.dtype == np.uint8
    for a in range(0, 10, 4):
        store.write(a, labels[a:a + 4])
    assert torch.equal(store.read(3, 9), labels[3:9]) and store.read(3, 9).dtype == torch.uint8
    assert torch.equal(store.tensor(), labels) and store.value_range() == (int(labels.min()), int(labels.max()))
    assert torch.equal(torch.cat([c for _, c in store.chunks(3)]), labels)
    path = store.path
    store.delete()
    if path:
        assert not (tmp_path / path).exists()


def test_label_store_picks_a_wider_type_and_refuses_values_that_do_not_fit(tmp_path):
    assert LabelStore(2, (2, 2), 300).dtype == np.int16
    store = LabelStore(2, (2, 2), 5)
    with pytest.raises(InputError, match="do not fit"):
        store.write(0, torch.full((1, 2, 2), 256))
    with pytest.raises(InputError, match="do not fit the store"):
        store.write(1, torch.zeros(2, 2, 2))


def test_spill_file_is_removed_when_the_store_is_dropped(tmp_path):
    import gc
    import os

    store = LabelStore(4, (8, 8), 3, spill_bytes=0, spill_dir=str(tmp_path))
    path = store.path
    assert os.path.exists(path)
    del store
    gc.collect()
    assert not os.path.exists(path)


def test_memory_guard_prices_outputs_and_refuses_with_the_sizes_and_the_fix():
    sizes = float_output_bytes(1000, 480, 854, 20)
    assert sizes == {"mask": 1000 * 480 * 854 * 4, "all_masks": 20 * 1000 * 480 * 854 * 4,
                     "overlay": 3 * 1000 * 480 * 854 * 4}
    check_fits({"mask": 10}, "x", "fix", available=100)
    with pytest.raises(OutOfMemoryError, match=r"would take 39\.4 GB .*mask 1\.6 GB.*Fix: use the VIDEO") as e:
        check_fits(sizes, "The float outputs", "use the VIDEO outputs", available=24 * 10**9)
    assert "of the 24.0 GB of memory available" in str(e.value)


def test_a_size_change_inside_the_video_is_named(clip, monkeypatch):
    real = VideoStream._rgb
    monkeypatch.setattr(VideoStream, "_rgb", staticmethod(
        lambda frame: real(frame)[: H // 2] if frame.pts and frame.pts >= 1024 * 5 else real(frame)))
    with VideoStream(clip) as vs:  # frames from pts 5120 on (frame 5) come out at half height
        assert vs.read(0, 5).shape == (5, H, W, 3)
        with pytest.raises(InputError, match="Frame 5 of clip.mp4 is 64x24 but the video starts at 64x48"):
            vs.read(5, 8)
