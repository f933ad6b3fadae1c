"""Settings and inputs checked before any work: CLI and Python API, hints, progress, packaging."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg_core.__main__ import main
from vidseg_core.errors import InputError
from vidseg_core.pipeline import SegmentSettings, VideoSegmenter, segment_video
from vidseg_core.video_io import frames_from_tensor

ROOT = Path(__file__).resolve().parents[1]


def _frames(folder, n=2, size=(64, 128)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(folder / f"f{i:03d}.png")
    return folder


def _mask(path, values, size=(64, 128)):
    m = np.full(size, values[0], np.uint8)
    m[:, size[1] // 2:] = values[1]
    Image.fromarray(m, mode="L").save(path)
    return path


@pytest.fixture
def no_model(monkeypatch):
    def boom(args):
        raise AssertionError("the model was loaded before the checks")

    for mod in ("segment", "features"):
        monkeypatch.setattr(f"vidseg_core.commands.{mod}.load_model", boom)


@pytest.mark.parametrize("extra, expect", [
    (["--batch-size", "0"], "batch_size = 0 is outside >= 1"),
    (["--batch-size", "-3"], "batch_size = -3"),
    (["--clusters", "0"], "num_clusters = 0"),
    (["--clusters", "300"], "num_clusters = 300"),
    (["--seed", "-1"], "seed = -1"),
    (["--filter-s", "2"], "Filter factor s = 2.0"),
    (["--lam", "nan"], "not finite"),
    (["--fps", "0"], "--fps 0.0 must be positive"),
    (["--stride", "0"], "Stride must be at least 1"),
    (["--frames", "5:2"], "Invalid frame range"),
    (["--reference-frame", "7", "--reference-mask", "MASK"], "--reference-frame 7 is outside"),
    (["--reference-frame", "7"], "--reference-frame 7 is outside"),  # without a mask too
    (["--precision", "fp16", "--device", "cpu"], "fp16 is not supported on the CPU"),
    (["--device", "tpu9"], "Unknown device"),
    (["--max-side", "0"], "--max-side = 0"),
])
def test_bad_values_refused_before_model_and_dir(tmp_path, capsys, no_model, extra, expect):
    d = _frames(tmp_path / "in")
    out = tmp_path / "out"
    extra = [str(_mask(tmp_path / "m.png", (0, 1))) if e == "MASK" else e for e in extra]
    argv = ["segment", str(d), "--model", "tiny-sd", "--out", str(out), "--mode", "quality", "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expect in err and "Fix:" in err, err
    assert not out.exists()  # DIR untouched


def test_features_bad_batch_size_before_model(tmp_path, capsys, no_model):
    d = _frames(tmp_path / "in")
    assert main(["features", str(d), "--model", "tiny-sd", "--out", str(tmp_path / "f.safetensors"),
                 "--batch-size", "0"]) == 2
    assert "batch_size = 0" in capsys.readouterr().err


@pytest.mark.parametrize("case, expect, bad_hint", [
    ("max_side", "--max-side 8 makes the 128x64 frames 8x4", "Upscale"),
    ("missing_mask", "does not exist", "Re-export"),
    ("void_mask", "no labels: every pixel is void ([255])", "assign_void"),
    ("tiny_frames", "Frames of 48x32 are too small", "--max-side"),
])
def test_fix_hints_name_the_right_cause(tmp_path, capsys, no_model, case, expect, bad_hint):
    d = _frames(tmp_path / "in", size=(32, 48) if case == "tiny_frames" else (64, 128))
    argv = ["segment", str(d), "--model", "tiny-sd", "--out", str(tmp_path / "out"), "--quiet"]
    if case == "max_side":
        argv += ["--max-side", "8"]
    elif case == "missing_mask":
        argv += ["--reference-mask", str(tmp_path / "nope.png")]
    elif case == "void_mask":
        argv += ["--reference-mask", str(_mask(tmp_path / "m.png", (255, 255)))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expect in err and bad_hint not in err, err
    if case == "max_side":
        assert "Use --max-side 128 or more" in err


def test_api_batch_size_zero_and_bad_settings_refused():
    for kwargs, expect in [({"batch_size": 0}, "batch_size = 0"), ({"batch_size": 2.5}, "whole number"),
                           ({"mode": "slow"}, "Unknown mode"), ({"refiner": "x"}, "Unknown refiner"),
                           ({"num_clusters": True}, "whole number"), ({"reference_mask": np.full((4, 4), 255)}, "void")]:
        with pytest.raises(InputError, match=expect):
            VideoSegmenter(backbone=None, settings=SegmentSettings(**kwargs))


def test_api_frames_checked_or_converted():
    f01 = torch.rand(2, 8, 8, 3)
    u8 = (f01 * 255).round().to(torch.uint8)
    assert torch.allclose(frames_from_tensor(u8), u8.float() / 255)  # uint8: documented conversion
    assert torch.allclose(frames_from_tensor(u8.numpy()), u8.float() / 255)  # numpy uint8 too
    assert torch.equal(frames_from_tensor(f01.numpy()), f01)  # numpy float in 0..1
    assert frames_from_tensor(torch.ones(1, 4, 4, 4)).shape == (1, 4, 4, 3)  # an opaque alpha is dropped
    cases = [(f01 * 255, "look like 0..255 values: divide by 255"), (f01 * 2 - 1, "-1..1"),
             (f01.numpy() * 255, "0..255"), (u8.to(torch.int64), "dtype int64"), (u8.numpy().astype(np.int32), "int32"),
             (f01[0], "Add the frame axis"), (f01.permute(0, 3, 1, 2), "channels first"),
             (torch.full((1, 4, 4, 3), float("nan")), "NaN"), ([[0.5]], "list"), (f01[:0], "no frames")]
    for frames, expect in cases:
        with pytest.raises(InputError, match=expect):
            frames_from_tensor(frames)
    f = torch.rand(1, 4, 4, 3)
    before = f.clone()
    frames_from_tensor(f)
    assert torch.equal(f, before)  # the caller's tensor is never changed


def test_api_segment_video_uint8_numpy_equals_float():
    from vidseg_core.backbones import load_backbone

    tiny_sd = load_backbone("tiny-sd", device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 255, (2, 64, 128, 3), dtype=np.uint8)
    s = SegmentSettings(num_clusters=2, mode="fast", batch_size=2)
    a, _ = segment_video(tiny_sd, u8, s)
    b, _ = segment_video(tiny_sd, torch.from_numpy(u8).float() / 255, s)
    assert torch.equal(a, b)
    with pytest.raises(InputError, match="0..255"):
        segment_video(tiny_sd, u8.astype(np.float32), s)


def test_lost_reference_labels_warned_at_once(tmp_path, capsys):
    """A reference label that wins no cluster is printed as a warning, not only stored in summary.json."""
    d = _frames(tmp_path / "in", 2)
    m = np.zeros((64, 128), np.uint8)
    m[:2, :2] = 9  # far smaller than a feature cell... and 3 more labels than K = 1 can name
    m[:, 64:] = 3
    Image.fromarray(m, mode="L").save(tmp_path / "m.png")
    assert main(["segment", str(d), "--model", "tiny-sd", "--out", str(tmp_path / "out"), "--mode", "fast",
                 "--clusters", "1", "--reference-mask", str(tmp_path / "m.png"), "--quiet", "--no-overlay"]) == 0
    err = capsys.readouterr().err
    assert "warning: reference label(s)" in err and "won no KMeans cluster" in err and "--clusters" in err


def test_progress_reports_every_stage_of_every_batch(tmp_path, capsys):
    d = _frames(tmp_path / "in", 3)
    assert main(["segment", str(d), "--model", "tiny-sd", "--out", str(tmp_path / "out"), "--mode", "fast",
                 "--clusters", "2", "--batch-size", "2", "--no-overlay", "--serial-writes"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[")]
    stages = [ln.split("] ", 1)[1].rsplit("  ", 1)[0].strip() for ln in lines]
    assert stages == ["batch 1/2: diffusion features", "batch 1/2: scene context + refinement",
                      "batch 1/2: upsampling", "batch 1/2 computed", "batch 1/2 written",
                      "batch 2/2: diffusion features", "batch 2/2: scene context + refinement",
                      "batch 2/2: upsampling", "batch 2/2 computed", "batch 2/2 written"]


def test_progress_bar_redraws_during_a_long_stage():
    import io
    import time

    from vidseg_core.commands._common import ProgressBar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = ProgressBar(stream=stream, interval=0.02)
    bar(0, 3, "features")
    time.sleep(0.2)  # a long stage: no new tick, yet the line (elapsed time) keeps being redrawn
    bar.close()
    assert stream.getvalue().count("\r") >= 4 and "batch 1/3: diffusion features" in stream.getvalue()


def test_cli_sets_passive_openmp_before_torch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    code = ("import os, sys; import vidseg_core.__main__; "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.split() == ["PASSIVE", "False"], out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a user's choice is kept
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.split()[0] == "ACTIVE"


def test_pyproject_installs_every_package_and_data_file():
    """`pip install .` on the flat layout: exactly vidseg_core, all its sub-packages and its JSON configs."""
    from setuptools import find_namespace_packages

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert cfg["build-system"]["build-backend"] == "setuptools.build_meta"
    find = cfg["tool"]["setuptools"]["packages"]["find"]
    found = set(find_namespace_packages(str(ROOT), include=find["include"]))
    on_disk = {str(p.relative_to(ROOT)).replace(os.sep, ".") for p in (ROOT / "vidseg_core").rglob("*")
               if p.is_dir() and p.name != "__pycache__"} | {"vidseg_core"}
    assert found == on_disk and not any(p.split(".")[0] != "vidseg_core" for p in found)
    patterns = cfg["tool"]["setuptools"]["package-data"]["*"]
    data = [p for p in (ROOT / "vidseg_core").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert data and all(any(p.match(pat) for pat in patterns) for p in data)
    module, func = cfg["project"]["scripts"]["vidseg"].split(":")
    assert callable(getattr(__import__(module, fromlist=[func]), func))
