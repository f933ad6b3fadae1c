"""Output folders (vidseg_core/output_dir.py): writability, inputs, the manifest of VidSeg's own files."""
import os

import pytest

from tests.helpers.permissions import deny_writes, needs_chmod
from vidseg_core.errors import OutputError
from vidseg_core.output_dir import (MANIFEST_NAME, OutputFolder, check_output_file, check_outside_inputs,
                                    check_writable, read_manifest)


def test_writable_folder_new_folder_and_file_parent(tmp_path):
    check_writable(tmp_path)
    check_writable(tmp_path / "a" / "b")  # probed in tmp_path, nothing created
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_writable(tmp_path / "f.txt")
    with pytest.raises(OutputError, match="f.txt is a file"):
        check_writable(tmp_path / "f.txt" / "out")


def test_unwritable_folder_and_parent_simulated(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    deny_writes(monkeypatch, out)
    with pytest.raises(OutputError, match=r"Cannot write to the output folder .*out: Permission denied.*chmod"):
        check_writable(out)
    deny_writes(monkeypatch, tmp_path)
    with pytest.raises(OutputError, match=r"nearest existing parent"):
        check_writable(tmp_path / "new" / "deeper")


@needs_chmod
def test_unwritable_folder_and_parent_chmod(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            check_writable(ro)
        with pytest.raises(OutputError, match="nearest existing parent"):
            check_writable(ro / "new")
    finally:
        ro.chmod(0o755)


def test_outside_inputs(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for out in (frames, frames / "seg", frames / "a" / "b"):
        with pytest.raises(OutputError, match="input"):
            check_outside_inputs(out, [frames])
    with pytest.raises(OutputError, match="contains the input"):
        check_outside_inputs(tmp_path, [frames])
    check_outside_inputs(tmp_path / "seg", [frames, None])


def test_output_file_checks(tmp_path):
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(OutputError, match="exists.*--overwrite"):
        check_output_file(tmp_path / "r.json")
    assert check_output_file(tmp_path / "r.json", overwrite=True) == tmp_path / "r.json"
    with pytest.raises(OutputError, match="must end in .safetensors"):
        check_output_file(tmp_path / "f.bin", suffix=".safetensors")
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path)


def _run(folder, files, finish=True):
    folder.start({"k": 1})
    folder.claim(["labels/"])
    folder.claim([f"labels/{f}" for f in files])
    for f in files:
        with folder.writing(f"labels/{f}") as p:
            p.write_text(f)
    if finish:
        folder.finish()


def test_manifest_overwrite_replaces_only_own_files(tmp_path):
    out = tmp_path / "out"
    _run(OutputFolder.open(out, "segment", ("labels",)), ["a.png", "b.png"])
    header, owned, status, done = read_manifest(out / MANIFEST_NAME)
    assert header["command"] == "segment" and "labels/a.png" in owned and status == "finished"
    with pytest.raises(OutputError, match="results of a finished `segment` run.*--overwrite"):
        OutputFolder.open(out, "segment", ("labels",))
    (out / "notes.txt").write_text("mine")
    folder = OutputFolder.open(out, "segment", ("labels",), overwrite=True)
    _run(folder, ["c.png"])
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["c.png"]  # a, b (ours) replaced
    assert (out / "notes.txt").read_text() == "mine"


def test_user_files_where_vidseg_writes_are_never_replaced(tmp_path):
    out = tmp_path / "out"
    _run(OutputFolder.open(out, "segment", ("labels", "summary.json")), ["a.png"])
    (out / "labels" / "mine.png").write_text("user")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="did not write.*labels/mine.png"):
            OutputFolder.open(out, "segment", ("labels", "summary.json"), overwrite=overwrite)
    plain = tmp_path / "plain"  # no manifest: a user's summary.json is not VidSeg's
    plain.mkdir()
    (plain / "summary.json").write_text("user")
    with pytest.raises(OutputError, match="summary.json"):
        OutputFolder.open(plain, "segment", ("labels", "summary.json"), overwrite=True)
    assert (out / "labels" / "mine.png").read_text() == "user" and (plain / "summary.json").read_text() == "user"


def test_unfinished_run_is_reused_without_overwrite(tmp_path):
    out = tmp_path / "out"
    _run(OutputFolder.open(out, "segment", ("labels",)), ["a.png", "b.png"], finish=False)
    (out / "labels" / "b.png").write_text("cut")  # an interrupted write: still ours (claimed before writing)
    folder = OutputFolder.open(out, "segment", ("labels",))
    assert folder.state == "partial"
    _run(folder, ["a.png"])
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.png"]
    empty_labels = tmp_path / "old"  # an empty labels/ left by a failed run: reused
    (empty_labels / "labels").mkdir(parents=True)
    assert OutputFolder.open(empty_labels, "segment", ("labels",)).state == "empty"


def test_write_failure_names_complete_and_missing_outputs(tmp_path):
    out = tmp_path / "out"
    folder = OutputFolder.open(out, "segment", ("labels", "summary.json"))
    folder.start()
    folder.claim(["labels/", "labels/a.png", "labels/b.png", "summary.json"])
    folder.expect(["labels/a.png", "labels/b.png", "summary.json"])
    with folder.writing("labels/a.png") as p:
        p.write_text("a")
    with pytest.raises(OutputError) as info:
        with folder.writing("labels/b.png"):
            raise PermissionError(13, "Permission denied")
    msg = str(info.value)
    assert "Permission denied" in msg and "1 output(s) are complete and kept: labels/a.png" in msg
    assert "not written: labels/b.png, summary.json" in msg and "rerun the same command" in msg
    assert read_manifest(out / MANIFEST_NAME)[2] == "failed" and (out / "labels" / "a.png").exists()


def test_manifest_cannot_name_paths_outside_its_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / MANIFEST_NAME).write_text('{"vidseg_manifest": 1, "command": "segment"}\n'
                                     '{"files": ["../victim.txt", "/etc/hostname", "labels/a.png"]}\n')
    assert read_manifest(out / MANIFEST_NAME).owned == ["labels/a.png"]
    OutputFolder.open(out, "segment", ("labels",), overwrite=True).start()
    assert victim.read_text() == "keep"


def test_unwritable_for_another_reason_gets_its_own_fix(tmp_path, monkeypatch):
    """A folder refusing new files for a reason other than permissions (a virtual file system such as
    /proc, a read-only mount) is not told to chmod."""
    import errno
    from pathlib import Path

    import vidseg_core.output_dir as od

    if Path("/proc").is_dir():
        with pytest.raises(OutputError) as info:
            check_writable("/proc/vidseg-out")
        assert "chmod" not in str(info.value) and "nearest existing parent" in str(info.value)
    for code, fix in ((errno.ENOENT, "does not accept new files"), (errno.EROFS, "read-only"),
                      (errno.ENOSPC, "Free disk space"), (errno.EACCES, r"chmod u\+w")):
        def refuse(folder, code=code):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(od, "_probe", refuse)
        with pytest.raises(OutputError, match=fix) as info:
            check_writable(tmp_path / "new")
        assert code == errno.EACCES or "chmod" not in str(info.value)
