"""Output folders of the commands: checked before any work, owned, kept on failure."""
import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers.permissions import CHMOD_BLOCKS, deny_writes, needs_chmod
from vidseg_core import label_io
from vidseg_core.__main__ import main
from vidseg_core.output_dir import MANIFEST_NAME, read_manifest



def _frames(folder, n=3, size=(64, 128)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        img = rng.integers(0, 255, size + (3,), dtype=np.uint8)
        img[:, : size[1] // 2] //= 4
        Image.fromarray(img).save(folder / f"f{i:03d}.png")
    return folder


def _segment(d, out, *extra):
    return ["segment", str(d), "--model", "tiny-sd", "--out", str(out), "--mode", "fast", "--clusters", "2",
            "--quiet", "--no-overlay", *extra]


def _no_model(monkeypatch):
    """Fail the test if a command loads a model (every check must come first)."""
    def boom(args):
        raise AssertionError("the model was loaded before the checks")

    for mod in ("segment", "features"):
        monkeypatch.setattr(f"vidseg_core.commands.{mod}.load_model", boom)


@pytest.mark.parametrize("where", ["folder", "parent"])
def test_unwritable_output_refused_before_work_simulated(tmp_path, monkeypatch, capsys, where):
    d = _frames(tmp_path / "in", 2)
    parent = tmp_path / "p"
    parent.mkdir()
    out = parent / "out"
    if where == "folder":
        out.mkdir()
    deny_writes(monkeypatch, out if where == "folder" else parent)
    _no_model(monkeypatch)
    files = tmp_path / "files"
    files.mkdir()
    runs = {
        "segment": _segment(d, out),
        "features": ["features", str(d), "--model", "tiny-sd", "--out", str(out / "f.safetensors")],
        "evaluate": ["evaluate", "--pred", str(d), "--gt", str(d), "--out", str(out / "r.json")],
        "demo": ["demo", "--out", str(out)],
    }
    for name, argv in runs.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert "Cannot write to" in err and "Permission denied" in err and "Fix:" in err, (name, err)
    assert list(parent.iterdir()) == ([out] if where == "folder" else [])
    if where == "folder":
        assert list(out.iterdir()) == []


@needs_chmod
def test_unwritable_output_refused_chmod(tmp_path, capsys):
    d = _frames(tmp_path / "in", 2)
    ro = tmp_path / "ro"
    (ro / "out").mkdir(parents=True)
    ro.chmod(0o555)
    (ro / "out").chmod(0o555)
    try:
        assert main(_segment(d, ro / "out")) == 2
        assert "Permission denied" in capsys.readouterr().err
        assert main(_segment(d, ro / "new")) == 2
        assert "nearest existing parent" in capsys.readouterr().err
    finally:
        (ro / "out").chmod(0o755)
        ro.chmod(0o755)


def test_output_inside_input_folder_refused(tmp_path, monkeypatch, capsys):
    d = _frames(tmp_path / "in", 2)
    _no_model(monkeypatch)
    for out in (d / "seg", d):
        assert main(_segment(d, out)) == 2
        assert "input" in capsys.readouterr().err
    assert main(["features", str(d), "--model", "tiny-sd", "--out", str(d / "f.safetensors")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert sorted(p.name for p in d.iterdir()) == ["f000.png", "f001.png"]


def test_failure_mid_run_keeps_labels_and_says_which_are_complete(tmp_path, monkeypatch, capsys):
    """The folder becomes unwritable after 2 label maps: clear error, files kept, the rerun reuses the folder."""
    d = _frames(tmp_path / "in", 3)
    out = tmp_path / "out"
    real = label_io.save_label_png
    calls = []

    def flaky(path, labels):
        calls.append(path)
        if len(calls) == 3:
            if not CHMOD_BLOCKS:
                raise PermissionError(13, "Permission denied", str(path))
            (out / "labels").chmod(0o555)
        return real(path, labels)

    monkeypatch.setattr(label_io, "save_label_png", flaky)
    try:
        assert main(_segment(d, out, "--batch-size", "1")) == 2
    finally:
        (out / "labels").chmod(0o755)
    err = capsys.readouterr().err
    assert "Cannot write" in err and "labels/f002.png" in err and "Permission denied" in err
    assert "2 output(s) are complete and kept: labels/f000.png, labels/f001.png" in err
    assert "not written: labels/f002.png, summary.json" in err and "rerun the same command" in err
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["f000.png", "f001.png"]
    assert read_manifest(out / MANIFEST_NAME)[2] == "failed"
    calls.clear()
    monkeypatch.setattr(label_io, "save_label_png", lambda path, labels: (calls.append(path), real(path, labels)))
    with_overlay = [a for a in _segment(d, out, "--batch-size", "1") if a != "--no-overlay"]
    assert main(with_overlay) == 0  # no --overwrite needed: our own partial output
    assert any((out / n).exists() for n in ("overlay.mp4", "overlay.gif"))  # reused maps read back for it
    assert "its 2 complete label maps are reused (same settings)" in capsys.readouterr().err
    assert [p.name for p in calls] == ["f002.png"]  # only the missing batch was upsampled and written
    assert len(list((out / "labels").iterdir())) == 3
    assert json.loads((out / "summary.json").read_text())["reused_label_maps"] == 2
    fresh = tmp_path / "fresh"
    assert main(_segment(d, fresh, "--batch-size", "1")) == 0
    for p in sorted((fresh / "labels").iterdir()):  # the resumed run equals a fresh one
        assert (out / "labels" / p.name).read_bytes() == p.read_bytes()
    (out / "labels" / "f000.png").unlink()  # an unfinished run with other settings is replaced, not reused
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    (out / MANIFEST_NAME).write_text("\n".join(lines[:-1]) + "\n")  # as if cut before it finished
    assert main(_segment(d, out, "--batch-size", "1", "--seed", "3")) == 0
    assert "they are replaced" in capsys.readouterr().err


@pytest.mark.parametrize("serial", [False, True])
def test_failure_inside_the_writer_thread_is_reported_as_in_a_serial_run(tmp_path, monkeypatch, capsys, serial):
    """A write failing on the background writer thread stops the run with the serial run's message and files."""
    import threading

    d = _frames(tmp_path / "in", 3)
    out = tmp_path / "out"
    real, threads = label_io.save_label_png, []

    def flaky(path, labels):
        threads.append(threading.current_thread() is threading.main_thread())
        if len(threads) == 2:
            raise OSError(28, "No space left on device", str(path))
        return real(path, labels)

    monkeypatch.setattr(label_io, "save_label_png", flaky)
    assert main(_segment(d, out, "--batch-size", "1", *(["--serial-writes"] if serial else []))) == 2
    assert threads == [serial] * 2  # the overlapped run wrote on the writer thread, and stopped there
    err = capsys.readouterr().err
    assert "Cannot write" in err and "labels/f001.png: No space left on device" in err
    assert "1 output(s) are complete and kept: labels/f000.png; not written: labels/f001.png, labels/f002.png, " \
           "summary.json" in err
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["f000.png"]
    assert read_manifest(out / MANIFEST_NAME)[2] == "failed"


def test_overlapped_writes_equal_serial_writes_byte_for_byte(tmp_path):
    d = _frames(tmp_path / "in", 3)
    outs = {}
    for serial in (True, False):
        outs[serial] = tmp_path / f"out{serial}"
        argv = [a for a in _segment(d, outs[serial], "--batch-size", "1") if a != "--no-overlay"]
        assert main(argv + (["--serial-writes"] if serial else [])) == 0
    files = sorted(p.relative_to(outs[True]) for p in outs[True].rglob("*") if p.is_file())
    assert "labels/f002.png" in map(str, files) and any(str(f).startswith("overlay.") for f in files)
    for rel in files:
        if rel.name not in ("summary.json", MANIFEST_NAME):
            assert (outs[False] / rel).read_bytes() == (outs[True] / rel).read_bytes(), rel
    summary = json.loads((outs[False] / "summary.json").read_text())
    assert summary["seconds"]["write"] > 0 and summary["seconds"]["write_wait"] >= 0


def test_overwrite_keeps_user_files_and_refuses_foreign_labels(tmp_path, capsys):
    d = _frames(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert main(_segment(d, out)) == 0
    assert main(_segment(d, out)) == 2
    assert "finished `segment` run" in capsys.readouterr().err
    (out / "mine.txt").write_text("mine")
    assert main(_segment(d, out, "--overwrite")) == 0
    (out / "labels" / "mine.png").write_bytes(b"user")
    assert main(_segment(d, out, "--overwrite")) == 2
    assert "did not write" in capsys.readouterr().err and (out / "labels" / "mine.png").read_bytes() == b"user"
    assert (out / "mine.txt").read_text() == "mine"


def test_failed_run_before_writing_leaves_dir_reusable(tmp_path, monkeypatch, capsys):
    """A run that fails after the model loaded (here: in the pipeline) does not block the corrected rerun."""
    d = _frames(tmp_path / "in", 2)
    out = tmp_path / "out"

    def fail(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr("vidseg_core.pipeline.VideoSegmenter.run", fail)
    with pytest.raises(RuntimeError):
        main(_segment(d, out))
    assert read_manifest(out / MANIFEST_NAME)[2] == "failed"
    monkeypatch.undo()
    assert main(_segment(d, out)) == 0


def test_evaluate_out_file_refused_when_it_exists(tmp_path, capsys):
    d = _frames(tmp_path / "in", 1)
    res = tmp_path / "r.json"
    res.write_text("mine")
    _no = ["evaluate", "--pred", str(d), "--gt", str(d), "--metrics", "miou", "--out", str(res)]
    assert main(_no) == 2 and res.read_text() == "mine"
    assert "--overwrite" in capsys.readouterr().err


def test_demo_runs_twice(tmp_path, capsys, monkeypatch):
    """`bash scripts/demo.sh` twice: the demo replaces its own earlier outputs, never other files."""
    for var in ("VIDSEG_SD21", "VIDSEG_MODELS_DIR", "COMFYUI_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--frames", "4", "--size", "64x128", "--mode", "fast"]
    assert main(argv) == 0
    (out / "notes.txt").write_text("mine")
    assert main(argv[:4] + ["3"] + argv[5:] + ["--overwrite"]) == 0  # fewer frames: old ones removed
    assert "replacing the outputs of the earlier demo run" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert len(list((out / "result" / "labels").iterdir())) == 3 and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "scores.json").read_text())["summary"]["frames"] == 3


def test_failure_at_the_end_keeps_label_maps_and_names_missing_overlay_and_summary(tmp_path, monkeypatch, capsys):
    """The folder turns read-only after every label map was written: the overlay / summary cannot be written."""
    d = _frames(tmp_path / "in", 2)
    out = tmp_path / "out"

    def close(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(label_io.OverlayVideoWriter, "close", close)
    argv = [a for a in _segment(d, out) if a != "--no-overlay"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "2 output(s) are complete and kept: labels/f000.png, labels/f001.png" in err
    assert "not written: overlay, summary.json" in err
    assert len(list((out / "labels").iterdir())) == 2


def _fail_third_write(monkeypatch):
    """save_label_png fails on its 3rd call (an OSError: the run stops with 2 complete label maps)."""
    real, calls = label_io.save_label_png, []

    def flaky(path, labels):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        return real(path, labels)

    monkeypatch.setattr(label_io, "save_label_png", flaky)
    return calls


def test_resume_recomputes_when_a_frame_changed(tmp_path, monkeypatch, capsys):
    """Same names and count, but a frame was replaced: the unfinished run's label maps are not reused."""
    import os

    d = _frames(tmp_path / "in", 3)
    out = tmp_path / "out"
    _fail_third_write(monkeypatch)
    assert main(_segment(d, out, "--batch-size", "1")) == 2
    monkeypatch.undo()
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(d / "f001.png")  # another frame 1
    st = (d / "f001.png").stat()
    os.utime(d / "f001.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    capsys.readouterr()
    assert main(_segment(d, out, "--batch-size", "1")) == 0
    assert "they are replaced" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    assert main(_segment(d, fresh, "--batch-size", "1")) == 0
    for p in sorted((fresh / "labels").iterdir()):
        assert (out / "labels" / p.name).read_bytes() == p.read_bytes(), p.name
    assert json.loads((out / "summary.json").read_text())["reused_label_maps"] == 0


def test_manifest_records_only_the_overlay_written_and_keeps_a_users_other_one(tmp_path, capsys):
    d = _frames(tmp_path / "in", 2)
    out = tmp_path / "out"
    argv = [a for a in _segment(d, out) if a != "--no-overlay"]
    assert main(argv) == 0
    written = [n for n in ("overlay.mp4", "overlay.gif") if (out / n).exists()]
    assert len(written) == 1
    other = "overlay.gif" if written == ["overlay.mp4"] else "overlay.mp4"
    owned = read_manifest(out / MANIFEST_NAME).owned
    assert written[0] in owned and other not in owned and "summary.json" in owned
    (out / other).write_bytes(b"the user's own overlay")
    assert main(argv + ["--overwrite"]) == 2  # where VidSeg may write: refused, never deleted
    assert other in capsys.readouterr().err
    assert (out / other).read_bytes() == b"the user's own overlay"


def test_unfinished_run_never_owns_a_summary_it_did_not_write(tmp_path, monkeypatch, capsys):
    d = _frames(tmp_path / "in", 3)
    out = tmp_path / "out"
    _fail_third_write(monkeypatch)
    assert main(_segment(d, out, "--batch-size", "1")) == 2
    monkeypatch.undo()
    assert "summary.json" not in read_manifest(out / MANIFEST_NAME).owned
    (out / "summary.json").write_text("my notes")
    assert main(_segment(d, out, "--batch-size", "1")) == 2
    assert "summary.json" in capsys.readouterr().err and (out / "summary.json").read_text() == "my notes"


def test_reference_mask_inside_the_output_folder_is_an_input(tmp_path, monkeypatch, capsys):
    """A label map of an earlier run used as --reference-mask: never deleted nor replaced by --overwrite."""
    d = _frames(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert main(_segment(d, out)) == 0
    mask = out / "labels" / "f000.png"
    before = mask.read_bytes()
    _no_model(monkeypatch)
    assert main(_segment(d, out, "--overwrite", "--reference-mask", str(mask))) == 2
    err = capsys.readouterr().err
    assert "contains the input" in err and str(mask) in err
    assert mask.read_bytes() == before
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights")
    assert main(["features", str(d), "--model", str(model), "--out", str(model), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err and model.read_bytes() == b"weights"  # a model is an input


def test_batch_written_is_said_only_after_its_files_are_written(tmp_path, monkeypatch):
    """Overlapped writes: "batch k/n written" comes after batch k's label maps are on disk."""
    import sys
    import time

    d = _frames(tmp_path / "in", 3)
    events = []
    real = label_io.save_label_png

    def slow(path, labels):
        time.sleep(0.3)
        real(path, labels)
        events.append(("png", path.name))

    class Stderr:
        def write(self, text):
            events.append(("err", text))

        def flush(self):
            pass

        def isatty(self):
            return False

    monkeypatch.setattr(label_io, "save_label_png", slow)
    monkeypatch.setattr(sys, "stderr", Stderr())
    argv = [a for a in _segment(d, tmp_path / "out", "--batch-size", "1") if a != "--quiet"]
    assert main(argv) == 0
    monkeypatch.undo()
    said = [i for i, (kind, text) in enumerate(events) if kind == "err" and "written" in text]
    assert len(said) == 3
    for k, i in enumerate(said):
        assert ("png", f"f{k:03d}.png") in events[:i], (k, events)
