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


def _named_frames(folder, names, size=(32, 48), grey=False):
    """Frames whose grey level is their position in ``names`` (time order), saved under those names."""
    folder.mkdir(parents=True, exist_ok=True)
    for t, name in enumerate(names):
        Image.fromarray(np.full(size + (() if grey else (3,)), 10 * t, np.uint8)).save(folder / name)
    return folder


def test_frames_are_listed_in_natural_order_everywhere(tmp_path):
    """ffmpeg's %d naming (1.jpg .. 12.jpg): every listing sees time order, never 1, 10, 11, 12, 2, ..."""
    from vidseg_core.dataset.layouts import _images
    from vidseg_core.dataset.protocol import find_reference
    from vidseg_core.dataset import Video
    from vidseg_core.metrics.io import list_frames, read_label_sequence

    names = [f"{i}.png" for i in range(1, 13)]
    d = _named_frames(tmp_path / "f", names)
    src = FrameSource(d)
    assert src.names == [str(i) for i in range(1, 13)]
    grey = src.read_all()[:, 0, 0, 0] * 255
    assert torch.allclose(grey, torch.arange(12, dtype=torch.float32) * 10)  # read in time order
    assert [p.name for p in list_frames(d)] == names
    labels, label_names = read_label_sequence(_named_frames(tmp_path / "gt", names, grey=True))
    assert label_names == names and labels[:, 0, 0].tolist() == [10 * t for t in range(12)]
    assert [p.name for p in _images(d)] == names
    ann = tmp_path / "ann"
    ann.mkdir()
    for n in ("2.png", "10.png"):  # sparse annotations: the first annotated frame in time is frame 2
        Image.fromarray(np.zeros((32, 48), np.uint8), mode="L").save(ann / n)
    assert find_reference(Video("v", str(d), 12, annotations=str(ann)), src.names) == (str(ann / "2.png"), 1)
    mixed = _named_frames(tmp_path / "m", ["frame_9.jpg", "frame_10.jpg", "Frame_11.jpg", "00012.jpg"])
    assert FrameSource(mixed).names == ["00012", "frame_9", "frame_10", "Frame_11"]


def test_two_frames_with_one_stem_are_refused_with_their_names(tmp_path):
    from vidseg_core.dataset.layouts import read_dataset
    from vidseg_core.metrics.io import list_frames

    d = _named_frames(tmp_path / "clips" / "c", ["00001.jpg", "00002.jpg", "00002.png"])
    with pytest.raises(InputError, match=r"same name.*00002.jpg and 00002.png.*overwrite"):
        FrameSource(d)
    with pytest.raises(InputError, match="00002.jpg and 00002.png"):
        read_dataset(tmp_path / "clips", "folders")
    g = tmp_path / "gt"
    g.mkdir()
    for n in ("00000.png", "00000.PNG"):
        Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(g / n, format="PNG")
    if len(list(g.iterdir())) == 2:  # a case-sensitive file system
        with pytest.raises(InputError, match="00000.PNG and 00000.png"):
            list_frames(g)


def test_fingerprint_follows_every_selected_frame(tmp_path):
    import os

    d = _write_frames(tmp_path / "f", 4)
    before = FrameSource(d).fingerprint()
    assert FrameSource(d).fingerprint() == before
    st = (d / "00002.png").stat()
    os.utime(d / "00002.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a middle frame edited
    assert FrameSource(d).fingerprint() != before
    assert FrameSource(d, frame_range=(0, 2)).fingerprint() == FrameSource(d, frame_range=(0, 2)).fingerprint()


def test_rgba_frames_refused_unless_opaque():
    rgb = torch.rand(2, 4, 4, 3)
    opaque = torch.cat([rgb, torch.ones(2, 4, 4, 1)], -1)
    assert torch.equal(frames_from_tensor(opaque), rgb)  # nothing lost: the alpha is dropped
    u8 = torch.cat([(rgb * 255).to(torch.uint8), torch.full((2, 4, 4, 1), 255, dtype=torch.uint8)], -1)
    assert frames_from_tensor(u8).shape == (2, 4, 4, 3)
    see_through = opaque.clone()
    see_through[1, 0, 0, 3] = 0.5
    with pytest.raises(InputError, match=r"RGBA with transparent pixels.*frames\[\.\.\., :3\]"):
        frames_from_tensor(see_through)
    with pytest.raises(InputError, match="transparent"):
        frames_from_tensor(torch.zeros(1, 4, 4, 4, dtype=torch.uint8).numpy())
