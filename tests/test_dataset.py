"""``dataset``: layouts, shards, resume after a kill, failures, scores vs the metrics computed directly.

Tiny DAVIS / VSPW / folders trees are built from the real clips (tests/helpers/datasets.py); the model is
the random ``tiny-sd`` backbone in fast mode at 128 x 72, one torch thread per worker.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from helpers.datasets import make_davis2017, make_folders, make_vspw
from vidseg_core.__main__ import main
from vidseg_core.dataset import DatasetRun, Video, read_dataset, run_dataset, select_videos, shard, split_shards
from vidseg_core.dataset.protocol import JobConfig
from vidseg_core.errors import InputError
from vidseg_core.metrics import ConfusionMatrix, evaluate_dirs, read_label_png, read_label_sequence, vspw_remap
from vidseg_core.pipeline import SegmentSettings

OPTS = ["--model", "tiny-sd", "--device", "cpu", "--mode", "fast", "--clusters", "4", "--batch-size", "4", "--quiet"]


def job(**kw) -> JobConfig:
    return JobConfig(out="", model="tiny-sd", device="cpu", settings=SegmentSettings(num_clusters=4, batch_size=4,
                                                                                       mode="fast"), threads=1, **kw)


def run(root, layout, out, **kw):
    return run_dataset(DatasetRun(root=str(root), layout=layout, out=str(out), config=job(), quiet=True, **kw))


def tree_bytes(folder: Path) -> dict:
    """Relative path -> sha1 of every file (hidden book-keeping excluded)."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png")) if ".vidseg" not in p.parts}


@pytest.fixture(scope="module")
def davis(tmp_path_factory, blackswan_dir):
    return make_davis2017(blackswan_dir, tmp_path_factory.mktemp("davis") / "DAVIS")


@pytest.fixture(scope="module")
def baseline(davis, tmp_path_factory):
    """One uninterrupted local run of the whole tiny DAVIS set."""
    out = tmp_path_factory.mktemp("base") / "out"
    res = run(davis, "davis2017", out)
    assert res.exit_code == 0 and sorted(res.computed) == ["swan-a", "swan-b", "swan-c"]
    return out, res


# ---------------------------------------------------------------- layouts
def test_layouts_read_in_place(davis, tmp_path, shared_data):
    before = tree_bytes(davis)
    d17 = read_dataset(davis, "davis2017")
    assert [v.name for v in d17.videos] == ["swan-a", "swan-b", "swan-c"]
    assert [v.num_frames for v in d17.videos] == [6, 4, 5] and d17.gt_transform == "none"
    assert d17.metrics == ("jf",) and d17.split == "val"
    d16 = read_dataset(davis, "davis2016")
    assert d16.gt_transform == "binary" and len(d16.videos) == 3
    vs = read_dataset(make_vspw(shared_data / "blackswan", tmp_path / "vspw"), "vspw")
    assert vs.num_classes == 124 and vs.gt_transform == "vspw"
    assert Path(vs.videos[0].frames).name == "origin" and Path(vs.videos[0].annotations).name == "mask"
    fo = read_dataset(make_folders(shared_data, tmp_path / "clips", tmp_path / "ann"), "folders",
                      annotations=tmp_path / "ann")
    by = {v.name: v for v in fo.videos}
    assert sorted(by) == ["plain", "room", "swan"]
    assert by["swan"].annotations and by["room"].reference_path and not by["plain"].annotations and not by["plain"].reference_path
    assert [v.name for v in select_videos(read_dataset(davis, "davis2017"), "swan-c,swan-a").videos] == \
        ["swan-c", "swan-a"]
    (tmp_path / "list.txt").write_text("swan-b\n")
    assert [v.name for v in select_videos(read_dataset(davis, "davis2017"), str(tmp_path / "list.txt")).videos] == \
        ["swan-b"]
    assert tree_bytes(davis) == before


@pytest.mark.parametrize("case, expect", [
    ("no_split", "split file"), ("pairs", "malformed"), ("no_video", "Frames folder of video 'swan-b'"),
    ("no_masks", "holds no PNG"), ("unknown_video", "not in the davis2017 set"), ("split_folders", "--split"),
    ("out_inside", "inside"), ("out_unwritable", "cannot be created"), ("out_foreign", "not empty"),
])
def test_bad_dataset_is_refused_before_any_work(tmp_path, blackswan_dir, case, expect, capsys):
    root = make_davis2017(blackswan_dir, tmp_path / "DAVIS", clips={"swan-a": (0, 3, False), "swan-b": (3, 3, False)})
    out = tmp_path / "out"
    args = ["dataset", str(root), "--layout", "davis2017", "--out", str(out)] + OPTS
    if case == "no_split":
        args += ["--split", "test-dev"]
    elif case == "pairs":
        (root / "ImageSets" / "2017" / "val.txt").write_text("/JPEGImages/480p/bear/00000.jpg /Annotations/x.png\n")
    elif case == "no_video":
        for p in (root / "JPEGImages" / "480p" / "swan-b").iterdir():
            p.unlink()
        (root / "JPEGImages" / "480p" / "swan-b").rmdir()
    elif case == "no_masks":
        for p in (root / "Annotations" / "480p" / "swan-a").iterdir():
            p.unlink()
    elif case == "unknown_video":
        args += ["--videos", "swan-a,bear"]
    elif case == "split_folders":
        args[3] = "folders"
        args += ["--split", "val"]
    elif case == "out_inside":
        out = root / "results"
        args[5] = str(out)
    elif case == "out_unwritable":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
        args[5] = str(out)
    elif case == "out_foreign":
        out.mkdir()
        (out / "mine.txt").write_text("keep")
    assert main(args) == 2
    assert expect in capsys.readouterr().err
    if case == "out_foreign":
        assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    else:
        assert not out.exists()


# ---------------------------------------------------------------- shards
def test_shards_are_a_balanced_partition():
    rng = random.Random(3)
    videos = [Video(f"v{i:03d}", "", rng.randint(20, 300)) for i in range(343)]
    for n in (1, 2, 3, 8):
        shards = split_shards(videos, n)
        names = [v.name for s in shards for v in s]
        assert sorted(names) == sorted(v.name for v in videos) and len(names) == len(set(names))
        loads = [sum(v.num_frames for v in s) for s in shards]
        assert max(loads) - min(loads) <= max(v.num_frames for v in videos)
        assert [v.name for v in shard(videos[::-1], 0, n)] == [v.name for v in shard(videos, 0, n)][::-1]


def test_shards_union_equals_the_whole_run(davis, baseline, tmp_path):
    out = tmp_path / "out"
    first = run(davis, "davis2017", out, shard="0/2")
    assert first.scores["pending"] and first.exit_code == 0
    second = run(davis, "davis2017", out, shard="1/2")
    assert sorted(first.computed + second.computed) == ["swan-a", "swan-b", "swan-c"]
    assert not set(first.computed) & set(second.computed)
    assert tree_bytes(out) == tree_bytes(baseline[0])
    assert second.scores["dataset"] == baseline[1].scores["dataset"] and not second.scores["pending"]


# ---------------------------------------------------------------- protocol and scores
def test_davis_outputs_and_scores_equal_evaluate(davis, baseline):
    out, res = baseline
    ann = davis / "Annotations" / "480p"
    for v in ("swan-a", "swan-b", "swan-c"):
        names = sorted(p.name for p in (out / v).glob("*.png"))
        assert names == sorted(p.name for p in (ann / v).glob("*.png"))
        assert read_label_png(out / v / names[0]).shape == (72, 128)
        ref = json.loads((out / ".vidseg" / "done" / f"{v}.json").read_text())
        assert ref["reference_frame"] == 0 and set(ref["label_table"]) <= {0, 1, 2}  # void 255 never a label
        direct = evaluate_dirs(out / v, ann / v, metrics="jf")["jf"]
        got = res.scores["videos"][v]
        assert got["J&F-Mean"] == pytest.approx(direct["J&F-Mean"], abs=1e-12)
        assert got["J-Mean"] == pytest.approx(direct["J_mean"], abs=1e-12)
        assert got["F-Decay"] == pytest.approx(direct["F_decay"], abs=1e-12)
    whole = evaluate_dirs(out, ann, metrics="jf")["jf"]
    assert res.scores["dataset"]["J&F-Mean"] == pytest.approx(whole["J&F-Mean"], abs=1e-12)
    assert res.scores["dataset"]["objects"] == len(whole["objects"]) == 6
    saved = json.loads((out / "scores.json").read_text())
    assert set(saved) >= {"dataset", "videos"} and saved["dataset"]["J&F-Mean"] == res.scores["dataset"]["J&F-Mean"]
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("video,status,frames,seconds,J&F-Mean,J-Mean") and rows[-1].startswith("(dataset),")
    assert len(rows) == 5


def test_vspw_remap_reference_and_global_miou(tmp_path, blackswan_dir):
    root = make_vspw(blackswan_dir, tmp_path / "VSPW", clips={"long": (0, 10, False), "short": (4, 6, True)})
    res = run(root, "vspw", tmp_path / "out")
    assert res.exit_code == 0
    cm, cms = ConfusionMatrix(124), {}
    for v in ("long", "short"):
        pred, names = read_label_sequence(tmp_path / "out" / v)
        gt, gt_names = read_label_sequence(root / "data" / v / "mask")
        assert [n[:-4] for n in names] == [n[:-4] for n in gt_names]
        assert set(np.unique(pred)) <= {4, 11}  # raw 5 / 12 after the remap; 0 "others" and 255 never labels
        cm.update(pred, vspw_remap(gt))
        direct = evaluate_dirs(tmp_path / "out" / v, root / "data" / v / "mask", metrics="miou,vc8,vc16",
                               vspw_remap=True)
        got = res.scores["videos"][v]
        assert got["mIoU"] == pytest.approx(direct["miou"]["miou"], abs=1e-12)
        assert got["mVC_8"] == direct["vc8"]["value"] and got["mVC_16"] == direct["vc16"]["value"]
    assert res.scores["dataset"]["mIoU"] == pytest.approx(cm.compute().miou, abs=1e-12)
    assert res.scores["videos"]["long"]["mVC_8"] is not None and res.scores["dataset"]["mVC_16"] is None


def test_folders_layout(tmp_path, shared_data):
    root = make_folders(shared_data, tmp_path / "clips", tmp_path / "ann")
    res = run(root, "folders", tmp_path / "out", annotations=str(tmp_path / "ann"))
    assert res.exit_code == 0 and sorted(res.computed) == ["plain", "room", "swan"]
    assert set(np.unique(read_label_sequence(tmp_path / "out" / "room")[0])) <= {0, 3}
    assert sorted(p.stem for p in (tmp_path / "out" / "plain").glob("*.png")) == ["f000", "f001", "f002", "f003"]
    assert list(res.scores["videos"]["swan"]) >= ["status", "frames", "seconds", "J&F-Mean"]
    assert "J&F-Mean" not in res.scores["videos"]["room"] and res.scores["dataset"]["videos_scored"] == 1


# ---------------------------------------------------------------- resume and failures
def test_killed_run_resumes_to_identical_outputs(davis, baseline, tmp_path, monkeypatch):
    import vidseg_core.label_io as label_io

    out = tmp_path / "out"
    real, calls = label_io.save_label_png, []

    def killed_mid_second_video(path, labels):  # longest first: swan-a (6 frames), then swan-c
        calls.append(path)
        if len(calls) == 8:
            raise KeyboardInterrupt  # not an Exception: nothing records it, like SIGKILL
        real(path, labels)

    monkeypatch.setattr(label_io, "save_label_png", killed_mid_second_video)
    with pytest.raises(KeyboardInterrupt):
        run(davis, "davis2017", out)
    monkeypatch.setattr(label_io, "save_label_png", real)
    done = out / ".vidseg" / "done"
    assert sorted(p.stem for p in done.glob("*.json")) == ["swan-a"]
    assert len(list((out / ".vidseg" / "partial" / "swan-c").glob("*.png"))) == 1  # half a video, not done
    (out / "swan-b").mkdir()
    (out / "swan-b" / "00000.png").write_bytes(b"half-written")  # a folder without a marker is redone
    marker = (done / "swan-a.json").stat().st_mtime_ns
    res = run(davis, "davis2017", out)
    assert res.skipped == ["swan-a"] and sorted(res.computed) == ["swan-b", "swan-c"]
    assert (done / "swan-a.json").stat().st_mtime_ns == marker
    assert tree_bytes(out) == tree_bytes(baseline[0])
    assert res.scores["dataset"] == baseline[1].scores["dataset"]
    again = run(davis, "davis2017", out)
    assert again.computed == [] and len(again.skipped) == 3


def test_failing_video_is_recorded_and_exit_is_nonzero(tmp_path, blackswan_dir, capsys):
    root = make_davis2017(blackswan_dir, tmp_path / "DAVIS",
                          clips={"good": (0, 3, False), "bad": (3, 4, False), "badgt": (7, 3, False)})
    (root / "JPEGImages" / "480p" / "bad" / "00002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "Annotations" / "480p" / "badgt" / "00001.png").write_bytes(b"\x89PNG truncated")
    before = tree_bytes(root) | {"bad.jpg": hashlib.sha1((root / "JPEGImages/480p/bad/00002.jpg").read_bytes()).hexdigest()}
    out = tmp_path / "out"
    rc = main(["dataset", str(root), "--layout", "davis2017", "--out", str(out)] + OPTS)
    assert rc == 1
    printed = capsys.readouterr().out
    assert "FAILED (2)" in printed and "bad" in printed and "00002.jpg" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert scores["videos"]["good"]["status"] == "done" and scores["videos"]["bad"]["status"] == "failed"
    assert "Cannot read image 00002.jpg" in scores["failed"]["bad"] and scores["dataset"]["videos_scored"] == 1
    assert scores["failed"]["badgt"].startswith("scoring: Cannot read") and (out / "badgt").is_dir()
    assert "bad,failed" in (out / "scores.csv").read_text() and not (out / "bad").exists()
    assert before == tree_bytes(root) | {"bad.jpg": hashlib.sha1(
        (root / "JPEGImages/480p/bad/00002.jpg").read_bytes()).hexdigest()}


def test_resume_with_other_settings_is_refused(davis, baseline, capsys):
    out = baseline[0]
    before = tree_bytes(out)
    args = ["dataset", str(davis), "--layout", "davis2017", "--out", str(out)] + OPTS
    args[args.index("--clusters") + 1] = "5"
    assert main(args) == 2
    assert "other settings" in capsys.readouterr().err and tree_bytes(out) == before


def test_run_folder_of_an_earlier_version_resumes(tmp_path):
    from vidseg_core.dataset.progress import RunFolder

    run = {"model": "tiny-sd", "settings": {"num_clusters": 4, "modulation": {"reference_pass": "auto", "lam": 1.0}}}
    earlier = json.loads(json.dumps(run))
    earlier["settings"]["modulation"] = {"reference": "auto", "lam": 1.0}  # the setting's earlier key
    (tmp_path / ".vidseg").mkdir()
    (tmp_path / ".vidseg" / "run.json").write_text(json.dumps(earlier))
    RunFolder(tmp_path).open(run, False, [])  # same settings: resumes
    assert json.loads((tmp_path / ".vidseg" / "run.json").read_text()) == run
    other = json.loads(json.dumps(run))
    other["settings"]["modulation"]["reference_pass"] = "store"
    with pytest.raises(InputError, match="other settings"):
        RunFolder(tmp_path).open(other, False, [])


def test_ray_missing_gives_a_clear_message(monkeypatch):
    import sys

    from vidseg_core.dataset.engines import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match="pip install 'vidseg\\[ray\\]'"):
        import_ray()


# ---------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) for this module; its files go to a temporary HOME / RAY_TMPDIR."""
    import os
    import shutil
    import tempfile

    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'vidseg[ray]')")
    from vidseg_core.dataset.engines import start_ray

    tmp = tempfile.mkdtemp(prefix="vsray", dir="/tmp")  # short: Ray's socket paths have a length limit
    saved = {k: os.environ.get(k) for k in ("HOME", "RAY_TMPDIR")}
    os.environ.update(HOME=tmp, RAY_TMPDIR=tmp)
    try:
        start_ray(None, 2)
        yield ray
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def test_ray_two_workers_match_the_local_engine(local_ray, davis, baseline, tmp_path):
    out = tmp_path / "out"
    res = run(davis, "davis2017", out, engine="ray", workers=2)
    assert res.exit_code == 0 and sorted(res.computed) == ["swan-a", "swan-b", "swan-c"]
    assert len({r["worker_pid"] for r in res.records}) == 2  # two workers, each loading the model once
    assert tree_bytes(out) == tree_bytes(baseline[0])
    assert res.scores["dataset"] == baseline[1].scores["dataset"]


# ---------------------------------------------------------------- review cases
def test_duplicated_split_line_runs_and_scores_the_video_once(tmp_path, blackswan_dir):
    root = make_davis2017(blackswan_dir, tmp_path / "DAVIS", clips={"swan-a": (0, 3, False), "swan-b": (3, 3, False)})
    (root / "ImageSets" / "2017" / "val.txt").write_text("swan-a\nswan-b\nswan-a\n")
    with pytest.warns(UserWarning, match="names swan-a more than once"):
        ds = read_dataset(root, "davis2017")
    assert [v.name for v in ds.videos] == ["swan-a", "swan-b"]
    with pytest.warns(UserWarning, match="more than once"):
        assert [v.name for v in select_videos(ds, "swan-b,swan-b").videos] == ["swan-b"]


def test_overwrite_keeps_files_vidseg_did_not_write(tmp_path, blackswan_dir):
    root = make_davis2017(blackswan_dir, tmp_path / "DAVIS", clips={"swan-a": (0, 3, False)})
    out = tmp_path / "out"
    first = run(root, "davis2017", out)
    assert first.exit_code == 0 and first.computed == ["swan-a"]
    outputs = tree_bytes(out)
    (out / "swan-a" / "notes.txt").write_text("mine")
    again = run(root, "davis2017", out, overwrite=True)
    assert again.computed == ["swan-a"]
    assert (out / "swan-a" / "notes.txt").read_text() == "mine" and tree_bytes(out) == outputs


def test_vspw_ids_above_the_class_count_refused_before_any_work(tmp_path, blackswan_dir, monkeypatch, capsys):
    root = make_vspw(blackswan_dir, tmp_path / "VSPW", clips={"a": (0, 3, False), "b": (3, 3, False)})
    from PIL import Image

    last = root / "data" / "b" / "mask" / "00000003.png"
    m = np.asarray(Image.open(last)).copy()
    m[10:20, 10:20] = 200  # not a VSPW class (1..124)
    Image.fromarray(m, mode="L").save(last)

    def boom(*args, **kwargs):
        raise AssertionError("the model was loaded before the checks")

    monkeypatch.setattr("vidseg_core.run_inputs.load_model", boom)
    out = tmp_path / "out"
    assert main(["dataset", str(root), "--layout", "vspw", "--out", str(out)] + OPTS) == 2
    err = capsys.readouterr().err
    assert "00000003.png of video 'b' holds ids [200]" in err and "124 classes" in err and "--num-classes" in err
    assert "--vspw-remap" not in err and not out.exists()


@pytest.mark.parametrize("case", ["videos_comma", "score_only_new"])
def test_nothing_to_do_is_an_error_not_a_silent_success(tmp_path, blackswan_dir, case, capsys):
    root = make_davis2017(blackswan_dir, tmp_path / "DAVIS", clips={"swan-a": (0, 3, False)})
    out = tmp_path / "out"
    args = ["dataset", str(root), "--layout", "davis2017", "--out", str(out)] + OPTS
    args += ["--videos", ","] if case == "videos_comma" else ["--score-only"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert ("names no video" if case == "videos_comma" else "holds no dataset run to score") in err
    assert not out.exists()


def test_scores_say_how_many_frames_had_ground_truth(tmp_path, blackswan_dir, capsys):
    root = make_davis2017(blackswan_dir, tmp_path / "DAVIS", clips={"swan-a": (0, 5, False), "swan-b": (5, 3, False)})
    (root / "Annotations" / "480p" / "swan-a" / "00002.png").unlink()  # a frame without annotation
    assert main(["dataset", str(root), "--layout", "davis2017", "--out", str(tmp_path / "out")] + OPTS) == 0
    printed = capsys.readouterr().out
    assert "1 video(s) have frames without ground truth" in printed and "swan-a 4 of 5" in printed
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["videos"]["swan-a"]["frames_scored"] == 4 and scores["videos"]["swan-b"]["frames_scored"] == 3
    assert scores["dataset"]["frames_scored"] == 7 and scores["dataset"]["frames"] == 8


def test_finished_video_whose_frames_changed_is_segmented_again(tmp_path, blackswan_dir, capsys):
    import os

    root = make_davis2017(blackswan_dir, tmp_path / "DAVIS", clips={"swan-a": (0, 3, False), "swan-b": (3, 3, False)})
    out = tmp_path / "out"
    assert sorted(run(root, "davis2017", out).computed) == ["swan-a", "swan-b"]
    frame = root / "JPEGImages" / "480p" / "swan-b" / "00001.jpg"
    st = frame.stat()
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the frame was edited
    res = run_dataset(DatasetRun(root=str(root), layout="davis2017", out=str(out), config=job()))
    assert res.computed == ["swan-b"] and res.skipped == ["swan-a"]
    assert "changed since they were segmented; segmenting them again: swan-b" in capsys.readouterr().err
    assert run(root, "davis2017", out).computed == []  # unchanged now: finished
