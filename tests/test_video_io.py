import numpy as np
import pytest
import torch
from PIL import Image

from vidseg_core.errors import InputError
from vidseg_core.video_io import FrameSource, capped_size, frames_from_tensor


def _write_frames(folder, n, size=(48, 64), sizes=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = sizes[i] if sizes else size
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return folder


def test_folder_reads_in_order_with_names(tmp_path):
    d = _write_frames(tmp_path / "f", 5)
    src = FrameSource(d)
    assert len(src) == 5 and src.frame_size == (48, 64)
    x = src.read(1, 3)
    assert x.shape == (2, 48, 64, 3) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    ref = np.asarray(Image.open(d / "00001.png")).astype(np.float32) / 255
    assert np.allclose(x[0].numpy(), ref)
    assert src.names == ["00000", "00001", "00002", "00003", "00004"]


def test_range_stride_and_cap(tmp_path):
    d = _write_frames(tmp_path / "f", 10, size=(40, 80))
    src = FrameSource(d, frame_range=(2, 9), stride=3, max_side=40)
    assert src.names == ["00002", "00005", "00008"]
    assert src.read_all().shape == (3, 20, 40, 3)
    assert capped_size(480, 854, 427) == (240, 427)


def test_video_file_streams_with_bounded_buffer(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    if not writer.isOpened():
        pytest.skip("no video encoder in this OpenCV build")
    for i in range(12):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    src = FrameSource(path, buffer=4)
    assert len(src) == 12
    a = src.read(8, 12)
    b = src.read(0, 2)  # rewinds
    assert a.shape == (4, 48, 64, 3) and b.shape == (2, 48, 64, 3)
    assert a[0].mean() > b[1].mean()
    assert len(src._buffer) <= 4


def test_gif(tmp_path):
    frames = [Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    src = FrameSource(tmp_path / "a.gif")
    assert len(src) == 3 and src.read_all().shape == (3, 32, 32, 3)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        FrameSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        FrameSource(tmp_path / "empty")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="Cannot read video"):
        FrameSource(bad)
    d = _write_frames(tmp_path / "mixed", 3, sizes=[(48, 64), (48, 64), (50, 64)])
    src = FrameSource(d)
    with pytest.raises(InputError, match="one size"):
        src.read_all()
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="neither"):
        FrameSource(tmp_path / "x.txt")
    with pytest.raises(InputError, match="No frames selected"):
        FrameSource(_write_frames(tmp_path / "g", 2), frame_range=(5, None))
    with pytest.raises(InputError, match=r"\[T,H,W,3\]"):
        frames_from_tensor(torch.zeros(4, 4, 3))
