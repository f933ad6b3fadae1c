import json

import numpy as np

from vidseg_core.__main__ import main
from vidseg_core.synthetic import make_clip


def test_synthetic_clip_has_moving_regions_with_exact_labels():
    frames, gt = make_clip(6, (64, 96))
    assert frames.shape == (6, 64, 96, 3) and frames.dtype == np.uint8 and gt.shape == (6, 64, 96)
    assert set(np.unique(gt)) == {0, 1, 2}
    assert not np.array_equal(gt[0], gt[-1])  # the regions move
    assert frames[gt == 1][:, 0].mean() > frames[gt == 2][:, 0].mean()  # the disc is red, the square blue


def test_demo_runs_and_says_which_model(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VIDSEG_SD21", raising=False)
    monkeypatch.delenv("VIDSEG_MODELS_DIR", raising=False)
    monkeypatch.delenv("COMFYUI_MODELS_DIR", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "10", "--size", "64x128", "--mode", "fast"]) == 0
    text = capsys.readouterr().out
    assert "RANDOMLY INITIALISED" in text
    scores = json.loads((out / "scores.json").read_text())["summary"]
    assert scores["tiny_backbone"] is True and 0 <= scores["mIoU"] <= 1 and 0 <= scores["mVC_8"] <= 1
    assert len(list((out / "result" / "labels").glob("*.png"))) == 10
    (out / "notes.txt").write_text("mine")  # a folder with other files: refused unless --overwrite
    assert main(["demo", "--out", str(out), "--frames", "10", "--size", "64x128"]) == 2
