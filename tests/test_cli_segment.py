import json
import shutil

import numpy as np
import pytest
from PIL import Image

from vidseg_core.__main__ import main
from vidseg_core.metrics.io import read_label_png


def _frames(folder, n=3, size=(64, 128), sizes=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        h, w = sizes[i] if sizes else size
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        img[:, : w // 2] //= 4  # two regions
        Image.fromarray(img).save(folder / f"f{i:03d}.png")
    return folder


def _mask(path, size, value_right=1):
    m = np.zeros(size, np.uint8)
    m[:, size[1] // 2:] = value_right
    Image.fromarray(m, mode="L").save(path)
    return path


def test_segment_fast_writes_labels_overlay_summary(tmp_path):
    d = _frames(tmp_path / "in", 4)
    out = tmp_path / "out"
    mask = _mask(tmp_path / "m.png", (64, 128), value_right=7)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    rc = main(["segment", str(d), "--model", "tiny-sd", "--out", str(out), "--mode", "fast", "--clusters", "3",
               "--batch-size", "3", "--reference-mask", str(mask), "--quiet", "--device", "cpu"])
    assert rc == 0
    labels = sorted((out / "labels").glob("*.png"))
    assert [p.stem for p in labels] == ["f000", "f001", "f002", "f003"]
    for p in labels:
        arr = read_label_png(p)
        assert arr.shape == (64, 128) and set(np.unique(arr)) <= {0, 7}
        assert Image.open(p).mode == "P"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_frames"] == 4 and summary["settings"]["mode"] == "fast"
    assert {e["value"] for e in summary["label_table"]["entries"]} <= {0, 7}
    assert set(summary["seconds"]) >= {"features", "coarse", "upsample", "total"}
    assert any((out / n).exists() for n in ("overlay.mp4", "overlay.gif"))
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # inputs untouched


def test_segment_refuses_non_empty_dir_and_keeps_user_files(tmp_path):
    d = _frames(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["segment", str(d), "--model", "tiny-sd", "--out", str(out), "--mode", "fast", "--clusters", "2", "--quiet"]
    assert main(args) == 2
    assert not (out / "labels").exists()
    assert main(args + ["--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and len(list((out / "labels").glob("*.png"))) == 2


@pytest.mark.parametrize("case", ["missing", "unreadable", "sizes", "mask_aspect", "model", "unknown_tiny"])
def test_segment_bad_input(tmp_path, case, capsys):
    d = _frames(tmp_path / "in", 2)
    args = ["segment", str(d), "--model", "tiny-sd", "--out", str(tmp_path / "out"), "--mode", "fast", "--quiet"]
    if case == "missing":
        args[1] = str(tmp_path / "nope")
        expect = "does not exist"
    elif case == "unreadable":
        bad = tmp_path / "clip.mp4"
        bad.write_bytes(b"\x00garbage" * 10)
        args[1] = str(bad)
        expect = "Cannot read video"
    elif case == "sizes":
        args[1] = str(_frames(tmp_path / "mixed", 2, sizes=[(64, 128), (64, 96)]))
        expect = "one size"
    elif case == "mask_aspect":
        args += ["--reference-mask", str(_mask(tmp_path / "m.png", (64, 64)))]
        expect = "aspect ratio"
    elif case == "model":
        args[3] = "sd-xl-base.safetensors"
        expect = "not found"
    else:
        args[3] = "tiny-flux"
        expect = "Unknown model type"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expect in err and "Fix:" in err


def test_segment_then_evaluate_blackswan(tmp_path, blackswan_dir, capsys):
    """The issue's check: tiny-sd on the 14 blackswan frames with the first-frame mask, then J&F."""
    out = tmp_path / "out"
    rc = main(["segment", str(blackswan_dir / "frames"), "--model", "tiny-sd", "--out", str(out),
               "--reference-mask", str(blackswan_dir / "masks_osvos" / "00000.png"), "--clusters", "5",
               "--max-side", "256", "--quiet", "--no-overlay"])
    assert rc == 0
    labels = sorted((out / "labels").glob("*.png"))
    assert len(labels) == 14 and read_label_png(labels[0]).shape == (480, 854)  # input resolution
    gt = tmp_path / "gt"
    gt.mkdir()
    for p in sorted((blackswan_dir / "masks_osvos").glob("*.png"))[:14]:
        shutil.copy(p, gt / p.name)
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(out / "labels"), "--gt", str(gt), "--metrics", "jf,miou",
                 "--num-classes", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    jf = res["jf"]["J&F-Mean"]
    assert 0.0 <= jf <= 1.0 and res["frames"] == 14
    assert 0.0 <= res["miou"]["miou"] <= 1.0


def test_segment_reads_ffmpeg_numbered_frames_in_time_order(tmp_path):
    """1.png .. 12.png (ffmpeg's %d): the run sees frame 1 first and frame 12 last, not 1, 10, 11, 12, 2, ..."""
    src = _frames(tmp_path / "src", 12)
    d = tmp_path / "in"
    d.mkdir()
    for i, p in enumerate(sorted(src.iterdir())):
        shutil.copy(p, d / f"{i + 1}.png")
    out = tmp_path / "out"
    assert main(["segment", str(d), "--model", "tiny-sd", "--out", str(out), "--mode", "fast", "--clusters", "2",
                 "--batch-size", "6", "--quiet", "--no-overlay"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"]["names"] == ["1", "12"] and summary["input"]["frames"] == 12
    assert sorted(p.stem for p in (out / "labels").iterdir()) == sorted(str(i) for i in range(1, 13))
