"""Naming inside the pipeline with the tiny backbones: a construction where the answer is known, the names
in summary.json / selection / the command line, and the refusal on SVD without an SD 2.1 namer."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vidseg_core.__main__ import main
from vidseg_core.backbones.sd21 import build_tiny_sd
from vidseg_core.errors import InputError
from vidseg_core.metrics.io import read_label_png
from vidseg_core.naming.capture import NamingCapture, naming_layers, query_bytes_per_frame
from vidseg_core.naming.segmenter import NamingSegmenter, NamingSettings
from vidseg_core.naming.vocabulary import load_vocabulary
from vidseg_core.pipeline import SegmentSettings
from tests.helpers.naming_construct import construct, feature_queries

H, W, T = 64, 128, 2


def _frames():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (T, H, W, 3)).astype(np.float32) / 255
    img[:, :, : W // 2] *= 0.25  # left half dark, right half bright
    return torch.from_numpy(img)


def _queries(bb, frames, layers):
    """The layers' conditional queries at the feature step, on the current weights."""
    return feature_queries(bb, frames, layers)


def _construct(bb, frames, voc):
    """See :func:`tests.helpers.naming_construct.construct` ('sky' takes cluster a, 'water' cluster b)."""
    return construct(bb, frames, voc)


@pytest.fixture(scope="module")
def constructed():
    bb = build_tiny_sd()
    voc = load_vocabulary("sky, water")
    frames = _frames()
    coarse, (a, b) = _construct(bb, frames, voc)
    return bb, voc, frames, coarse, a, b


def _segmenter(bb, voc, **settings):
    # threshold 0.6: the construction puts each cluster's mean query at +-8 logits, but single cells spread
    # around it (and blocks 3-5 are blurred to the grid): the clusters' mean scores are about 0.7
    return NamingSegmenter(bb, SegmentSettings(num_clusters=2, mode="fast", batch_size=T, **settings),
                           naming=NamingSettings(voc, threshold=0.6))


def test_constructed_word_takes_its_cluster_in_the_maps(constructed):
    bb, voc, frames, coarse, a, b = constructed
    seg = _segmenter(bb, voc)
    seg._features(frames)
    p = seg._pending  # [T, h, w, 2]
    assert p[coarse == a][:, 0].mean() > 0.7  # sky on cluster a (bilinear blocks 3-5 blur its border)
    assert p[coarse == b][:, 1].mean() > 0.7  # water on cluster b


def test_constructed_names_reach_the_label_table(constructed):
    bb, voc, frames, coarse, a, b = constructed
    seg = _segmenter(bb, voc)
    again = torch.cat([r.coarse for r in seg.run(lambda x, y: frames[x:y], T, (H, W))])
    assert torch.equal(again, coarse)  # the keys change nothing but the names
    table = seg.summary.table
    assert table.name_of(a) == "sky" and table.name_of(b) == "water"
    assert table.entry(a).score > 0.6 and table.entry(b).score > 0.6
    assert seg.naming["applied"] and [n["word"] for n in seg.naming["labels"]] == ["sky", "water"]
    assert set(seg.naming["seconds"]) == {"text", "maps", "namer_pass"}


def test_reference_names_are_kept_and_words_reported(constructed):
    bb, voc, frames, coarse, a, b = constructed
    # the reference mask is the clusters themselves at the frames' size: cluster a -> 5, b -> 9
    up = F.interpolate(coarse[:1, None].float(), size=(H, W), mode="nearest")[0, 0].long().numpy()
    ref = np.where(up == a, 5, 9)
    seg = _segmenter(bb, voc, reference_mask=ref, names={5: "swan", 9: "lake"})
    list(seg.run(lambda x, y: frames[x:y], T, (H, W)))
    assert [e.name for e in seg.summary.table] == ["swan", "lake"]
    assert seg.naming["applied"] is False
    assert {n["value"]: n["word"] for n in seg.naming["labels"]} == {5: "sky", 9: "water"}


def test_quality_mode_keeps_the_first_evaluation_and_reads_the_same_maps_as_fast(constructed):
    bb, voc, frames, coarse, a, b = constructed
    fast = _segmenter(bb, voc)
    fast._features(frames)
    quality = _segmenter(bb, voc)
    quality._features(frames, with_reference=True)  # features and modulation reference from one trajectory
    assert torch.allclose(quality._pending, fast._pending, atol=1e-5)


def test_naming_capture_keeps_the_first_queries_of_a_step():
    from vidseg_core.backbones.attention import HookContext, RowLayout

    layer = naming_layers(build_tiny_sd().config)[0]
    cap = NamingCapture([layer], 24, torch.float32, "cpu")
    ctx = HookContext(24, RowLayout(1, 1, 1), (1, 1))
    cap.on_qk(layer, torch.ones(1, 1, 2), None, ctx)
    cap.on_qk(layer, torch.zeros(1, 1, 2), None, ctx)
    assert cap.queries()[layer].tolist() == [[[1.0, 1.0]]]


def test_query_bytes_per_frame_of_tiny_sd():
    bb = build_tiny_sd()
    # 64x128 px -> latent 8x16; blocks 3-5 at 2x4 (64 ch), blocks 6-7 at 4x8 (64 ch); fp16
    assert query_bytes_per_frame(bb, (64, 128)) == (3 * 8 * 64 + 2 * 32 * 64) * 2


# ------------------------------------------------------------------ SVD
def test_svd_without_a_namer_is_refused():
    from vidseg_core.backbones.svd import build_tiny_svd

    with pytest.raises(InputError, match="needs a text encoder.*SD 2.1 checkpoint"):
        NamingSegmenter(build_tiny_svd(), SegmentSettings(num_clusters=2, mode="fast"),
                        naming=NamingSettings("sky, water"))
    with pytest.raises(InputError, match="not Stable Diffusion 2.1"):
        NamingSegmenter(build_tiny_sd(), SegmentSettings(num_clusters=2, mode="fast"),
                        naming=NamingSettings("sky, water", namer=build_tiny_svd()))


def test_svd_named_by_an_sd21_namer_reads_the_same_maps_as_sd21_itself():
    from vidseg_core.backbones.svd import build_tiny_svd

    frames = _frames()
    settings = SegmentSettings(num_clusters=2, mode="fast", batch_size=T)
    own = NamingSegmenter(build_tiny_sd(), settings, naming=NamingSettings("sky, water"))
    own._features(frames)
    svd = NamingSegmenter(build_tiny_svd(), settings, naming=NamingSettings("sky, water", namer=build_tiny_sd()))
    svd._features(frames)
    assert svd._pending.shape == own._pending.shape
    assert torch.allclose(svd._pending, own._pending, atol=1e-5)  # the namer's own pass, ended after block 7
    assert svd.naming_seconds["namer_pass"] > 0


# ------------------------------------------------------------------ command line
def _frame_folder(folder):
    folder.mkdir(parents=True)
    for i, f in enumerate((_frames().numpy() * 255).astype(np.uint8)):
        Image.fromarray(f).save(folder / f"f{i}.png")
    return folder


def test_cli_names_flow_into_summary_and_selection(tmp_path):
    d = _frame_folder(tmp_path / "in")
    out = tmp_path / "out"
    rc = main(["segment", str(d), "--model", "tiny-sd", "--out", str(out), "--mode", "fast", "--clusters", "2",
               "--batch-size", "2", "--quiet", "--device", "cpu", "--no-overlay", "--vocabulary", "sky, water",
               "--name-threshold", "0", "--select", "sky"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    names = {e["value"]: e["name"] for e in s["label_table"]["entries"]}
    assert set(names.values()) <= {"sky", "water"}  # threshold 0: every label takes its best word
    assert all("score" in e for e in s["label_table"]["entries"])
    assert s["naming"]["vocabulary"]["names"] == ["sky", "water"] and s["naming"]["applied"]
    chosen = [v for v, n in names.items() if n == "sky"]
    assert chosen  # (the tiny model's words for these frames, fixed by its seed)
    assert s["selection"]["values"] == chosen
    for f in ("f0", "f1"):
        labels = read_label_png(out / "labels" / f"{f}.png")
        sel = np.asarray(Image.open(out / "selection" / f"{f}.png"))
        assert np.array_equal(sel == 255, np.isin(labels, chosen))


def test_cli_unknown_selected_name_keeps_every_output_and_says_so(tmp_path, capsys):
    d = _frame_folder(tmp_path / "in")
    out = tmp_path / "out"
    rc = main(["segment", str(d), "--model", "tiny-sd", "--out", str(out), "--mode", "fast", "--clusters", "2",
               "--batch-size", "2", "--quiet", "--device", "cpu", "--no-overlay", "--vocabulary", "sky, water",
               "--select", "tree"])
    assert rc == 2
    assert "No label is called 'tree'" in capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    assert "tree" in s["selection"]["error"] and len(list((out / "labels").glob("*.png"))) == 2


def test_cli_refuses_svd_naming_and_options_without_vocabulary(tmp_path, capsys):
    d = _frame_folder(tmp_path / "in")
    base = ["segment", str(d), "--out", str(tmp_path / "out"), "--mode", "fast", "--quiet", "--device", "cpu"]
    assert main(base + ["--model", "tiny-svd", "--vocabulary", "sky, water"]) == 2
    assert "--namer" in capsys.readouterr().err
    assert main(base + ["--model", "tiny-sd", "--name-threshold", "0.1"]) == 2
    assert "without --vocabulary" in capsys.readouterr().err
    assert main(base + ["--model", "tiny-sd", "--vocabulary", "sky"]) == 2
    assert "at least two" in capsys.readouterr().err


def test_naming_benchmark_counts_on_the_real_architecture():
    from benchmarks import naming as bench

    lines = []
    r = bench.flops(words=10, T=2, H=64, W=128, log=lines.append)
    assert r["naming_gflop_per_frame"] > 0 and r["feature_tflop_per_frame"] > 0
    # SD 2.1 at 64x128: latent 8x16; blocks 3-5 at 2x4 x 1280 channels, blocks 6-7 at 4x8 x 640; fp16
    assert r["query_bytes_per_frame"] == (3 * 8 * 1280 + 2 * 32 * 640) * 2
    assert any("% of the feature pass" in line for line in lines)


def test_cli_namer_option_loads_an_sd21_namer_for_svd():
    import argparse

    from vidseg_core.backbones.svd import build_tiny_svd
    from vidseg_core.commands.naming_args import load_namer, naming_settings

    args = argparse.Namespace(vocabulary="everyday", name_threshold=None, tokenizer=None, namer="tiny-sd",
                              device="cpu", precision="fp32")
    naming = load_namer(args, naming_settings(args), build_tiny_svd())
    assert naming.namer.family == "sd" and len(naming.vocabulary) == 40


def _first_overlay_frame(out):
    import cv2

    path = next(p for p in (out / "overlay.mp4", out / "overlay.gif") if p.exists())
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame.astype(np.int16)


def test_cli_legend_draws_the_words_on_the_overlay_only_when_asked(tmp_path, capsys):
    from vidseg_core.labels import LabelTable
    from vidseg_core.legend import legend_box

    d = _frame_folder(tmp_path / "in")
    args = ["--model", "tiny-sd", "--mode", "fast", "--clusters", "2", "--batch-size", "2", "--quiet", "--device",
            "cpu", "--vocabulary", "sky, water", "--name-threshold", "0"]
    assert main(["segment", str(d), "--out", str(tmp_path / "plain"), *args]) == 0
    assert main(["segment", str(d), "--out", str(tmp_path / "again"), *args]) == 0
    assert main(["segment", str(d), "--out", str(tmp_path / "legend"), "--legend", *args]) == 0
    plain, again, legend = (_first_overlay_frame(tmp_path / n) for n in ("plain", "again", "legend"))
    assert np.array_equal(plain, again)  # without --legend the overlay is what it was
    s = json.loads((tmp_path / "legend" / "summary.json").read_text())
    box, top, left = legend_box(LabelTable.from_dict(s["label_table"]), H, W)  # the words, known after the run
    inside = np.zeros((H, W), bool)
    inside[top:top + box.shape[0], left:left + box.shape[1]] = True
    diff = np.abs(legend - plain).max(-1)
    assert diff[inside].mean() > 20 and diff[~inside].mean() < 3  # the box, written after the run (lossy video)
    assert main(["segment", str(d), "--out", str(tmp_path / "none"), "--legend", "--no-overlay", *args]) == 2
    assert "--legend is given with --no-overlay" in capsys.readouterr().err
