"""Output folders and files of the commands: checked before any work, owned through a manifest.

Every command that writes (``segment``, ``features``, ``evaluate --out``, ``demo``, ``dataset``) uses
these checks *before* it loads a model or touches anything:

* :func:`check_writable` -- the folder (or, if it does not exist yet, its nearest existing parent)
  really accepts a new file: probed by creating and removing a temporary entry, so read-only mounts,
  permissions and ACLs are all covered;
* :func:`check_outside_inputs` -- the output is not an input, not inside an input folder and does not
  contain an input (writing there would change the user's input);
* :func:`check_output_file` -- both, for a single output file.

:class:`OutputFolder` owns a folder through ``DIR/vidseg_manifest.jsonl``: every file a command writes is
recorded there right before it is written (and only a file the command is about to write), so ``--overwrite`` removes exactly VidSeg's own files (never the
user's), a rerun after a failed or interrupted run reuses the folder without ``--overwrite``, and files the
user put where VidSeg writes are never replaced.  :func:`write_failure` turns an ``OSError`` in the middle
of a run into a message that says which outputs are complete.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence

from .errors import OutputError

MANIFEST_NAME = "vidseg_manifest.jsonl"
#: at most this many names are listed in a message
_SHOWN = 5


def _shown(names: Sequence[str]) -> str:
    names = sorted(names)
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe(folder: Path) -> None:
    """Create and remove a temporary entry in ``folder``; raises ``OSError`` when it cannot be written."""
    fd, name = tempfile.mkstemp(prefix=".vidseg-write-test-", dir=folder)
    os.close(fd)
    os.unlink(name)


def check_writable(path, what: str = "output folder") -> None:
    """Raise :class:`OutputError` unless folder ``path`` (existing or to be created) can be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"The {what} {path} exists and is a file, not a folder.", "Choose a folder.")
    base = path if path.exists() else _nearest_existing(path)
    if not base.is_dir():
        raise OutputError(f"The {what} {path} cannot be created: {base} is a file, not a folder.",
                          "Choose a path whose parent folders are folders.")
    try:
        _probe(base)
    except OSError as exc:
        where = f"the {what} {path}" if base == path.absolute() or path.exists() else \
            f"{base} (the nearest existing parent of the {what} {path})"
        raise OutputError(f"Cannot write to {where}: {exc.strerror or exc}.", _write_fix(exc)) from exc


def _write_fix(exc: OSError) -> str:
    """The fix for a folder that refused a new file, by the reason it gave."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "Give write permission to that folder (chmod u+w) or choose another output folder on a writable disk."
    if exc.errno == errno.EROFS:
        return "That file system is mounted read-only: choose an output folder on a writable disk."
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "Free disk space (or raise the quota), or choose an output folder on another disk."
    return "That folder does not accept new files (a virtual or special file system?): choose an output folder " \
           "on an ordinary, writable disk."


def check_outside_inputs(out, inputs: Iterable, what: str = "output folder") -> None:
    """Refuse an output that is an input, lies inside an input folder, or contains an input."""
    out_r = Path(out).resolve()
    for item in inputs:
        if item is None:
            continue
        in_r = Path(item).resolve()
        if out_r == in_r:
            raise OutputError(f"The {what} {out} is the input {item}.", "Choose an output elsewhere.")
        if in_r in out_r.parents:
            raise OutputError(f"The {what} {out} is inside the input folder {item}: writing there would change "
                              "your input (a later run on that folder would see the new files).",
                              "Choose an output outside the input folder.")
        if out_r in in_r.parents:
            raise OutputError(f"The {what} {out} contains the input {item}.", "Choose an output folder elsewhere.")


def check_output_file(path, inputs: Iterable = (), overwrite: bool = False, suffix: Optional[str] = None,
                      what: str = "output file") -> Path:
    """Checks for one output file (``features --out``, ``evaluate --out``) before any work."""
    path = Path(path)
    if suffix is not None and path.suffix != suffix:
        raise OutputError(f"The {what} {path.name} must end in {suffix}.", f"Name it e.g. result{suffix}.")
    if path.is_dir():
        raise OutputError(f"The {what} {path} is a folder.", "Give a file name.")
    if path.exists() and not overwrite:
        raise OutputError(f"The {what} {path} exists.", "Pass --overwrite to replace it, or choose another name.")
    check_outside_inputs(path, inputs, what)
    check_writable(path.parent, f"folder of the {what}")
    return path


def write_failure(exc: OSError, target, complete: Sequence[str], not_written: Sequence[str], folder) -> OutputError:
    """The error for a write that failed mid-run: what failed, which outputs are complete, what to do."""
    done = f"{len(complete)} output(s) are complete and kept: {_shown(complete)}" if complete else \
        "no output was complete yet"
    missing = f"; not written: {_shown(not_written)}" if not_written else ""
    return OutputError(f"Cannot write {target}: {exc.strerror or exc}. {done}{missing}.",
                       f"Make {folder} writable again (or free disk space) and rerun the same command: "
                       "it reuses the folder of the unfinished run.")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class OutputFolder:
    """A command's output folder; see the module docstring.

    ``reserved``: the top-level names the command writes (``labels``, ``summary.json``...).  Foreign
    files there are never replaced: the folder is refused.  Other foreign entries are left alone and
    only need ``overwrite`` (the folder is "not empty").
    """

    def __init__(self, path, command: str, reserved: Sequence[str]):
        self.path = Path(path)
        self.command = command
        self.reserved = tuple(reserved)
        self.state = "new"  # new | empty | partial | finished
        self.previous: Dict = {}
        #: files an unfinished earlier run wrote completely (a rerun with its settings may keep them)
        self.previous_done: List[str] = []
        self._owned: List[str] = []
        #: outputs of this run written completely, and all it means to write (for the failure message)
        self.completed: List[str] = []
        self.expected: List[str] = []

    # ---------------------------------------------------------------- checks (read only)
    @classmethod
    def open(cls, path, command: str, reserved: Sequence[str], inputs: Iterable = (), overwrite: bool = False,
             replace_finished: bool = False) -> "OutputFolder":
        """All checks, touching nothing; ``replace_finished`` lets a finished run of the same command be
        replaced without ``overwrite`` (the demo)."""
        self = cls(path, command, reserved)
        check_outside_inputs(self.path, inputs)
        check_writable(self.path)
        if not self.path.exists():
            return self
        header, owned, status, done = read_manifest(self.path / MANIFEST_NAME)
        self.previous, self._owned = header, owned
        self.previous_done = [d for d in done if (self.path / d).is_file()] if status != "finished" else []
        owned_set = set(owned)
        protected = set(self.reserved) | {o.split("/")[0] for o in owned}
        foreign_protected, other = [], []
        for entry in sorted(self.path.iterdir()):
            name = entry.name
            if name == MANIFEST_NAME:
                continue
            if name + "/" in owned_set and (entry / MANIFEST_NAME).is_file():
                continue  # a nested VidSeg output folder (the demo's result/): its own command checks it
            if name in protected:  # where this command writes: every file there must be VidSeg's
                files = [p.relative_to(self.path).as_posix() for p in entry.rglob("*") if not p.is_dir()] \
                    if entry.is_dir() else [name]
                foreign_protected += [f for f in files if f not in owned_set]
            elif name not in owned_set:
                other.append(name)
        if foreign_protected:
            raise OutputError(f"The output folder {self.path} holds files VidSeg did not write where it writes its "
                              f"outputs: {_shown(foreign_protected)}. They are never replaced.",
                              "Move them away, or choose another output folder.")
        present = [o for o in owned if (self.path / o).exists()]
        if other and not overwrite:
            raise OutputError(f"The output folder {self.path} is not empty ({_shown(other)}).",
                              "Choose an empty or new folder, or pass --overwrite to write VidSeg's outputs there "
                              "(only files VidSeg wrote are replaced; yours are kept).")
        if not present:
            self.state = "empty"
        elif status == "finished":
            self.state = "finished"
            same = header.get("command") == command
            if not (overwrite or (replace_finished and same)):
                run = f"a finished `{header.get('command', '?')}` run" + \
                      (f" of {header['started']}" if header.get("started") else "")
                raise OutputError(f"The output folder {self.path} holds the results of {run}.",
                                  "Pass --overwrite to replace them (only the files VidSeg wrote are replaced), "
                                  "or choose another output folder.")
        else:
            self.state = "partial"
            if header.get("command") not in (None, command) and not overwrite:
                raise OutputError(f"The output folder {self.path} holds the unfinished outputs of "
                                  f"`{header.get('command')}`.", "Pass --overwrite to replace them, or choose "
                                                                 "another output folder.")
        return self

    # ---------------------------------------------------------------- writing
    def start(self, settings: Optional[dict] = None, keep: Sequence[str] = ()) -> None:
        """Remove VidSeg's own files of an earlier run, except ``keep`` (complete files of an unfinished
        run that this run reuses: recorded again as owned and done), and start a new manifest."""
        keep = [k for k in keep if k in set(self.previous_done)]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # deepest first, files before their folder; a folder goes only once empty (user files stay)
            for rel in sorted(set(self._owned) - set(keep),
                              key=lambda r: (r.rstrip("/").count("/"), not r.endswith("/")), reverse=True):
                p = self.path / rel.rstrip("/")
                if p.is_dir():
                    if not any(p.iterdir()):
                        p.rmdir()
                elif p.exists():
                    p.unlink()
            header = {"vidseg_manifest": 1, "command": self.command, "started": _now(), "settings": settings or {}}
            lines = [header] + ([{"files": list(keep)}, {"done": list(keep)}] if keep else [])
            (self.path / MANIFEST_NAME).write_text("".join(json.dumps(r, default=str) + "\n" for r in lines))
        except OSError as exc:
            raise OutputError(f"Cannot prepare the output folder {self.path}: {exc.strerror or exc}.",
                              "Make the folder writable, or choose another one.") from exc
        self._owned = list(keep)
        self.completed = list(keep)

    def done(self, rel_paths: Sequence[str]) -> None:
        """Record files as written completely (a rerun of an unfinished run may reuse them)."""
        if rel_paths:
            self._append({"done": list(rel_paths)})

    def claim(self, rel_paths: Sequence[str]) -> List[Path]:
        """Record files (``"labels/x.png"``) or folders (``"labels/"``) as VidSeg's before they are written."""
        rel_paths = [str(r) for r in rel_paths]
        self._append({"files": rel_paths})
        self._owned += rel_paths
        for r in rel_paths:
            if r.endswith("/"):
                (self.path / r).mkdir(parents=True, exist_ok=True)
        return [self.path / r for r in rel_paths]

    def release(self, rel_paths: Sequence[str]) -> None:
        """Undo :meth:`claim` for files that were not written after all (e.g. an encoder that failed to open)."""
        rel_paths = [str(r) for r in rel_paths]
        self._append({"released": rel_paths})
        self._owned = [o for o in self._owned if o not in set(rel_paths)]

    def expect(self, rel_paths: Sequence[str]) -> None:
        """Name every output of the run (listed as "not written" if the run fails before them)."""
        self.expected = list(rel_paths)

    @contextlib.contextmanager
    def writing(self, rel: str, complete: bool = True):
        """``with folder.writing("labels/x.png") as path: ...``: an ``OSError`` inside becomes an
        :class:`OutputError` saying which outputs are complete (all kept); on success ``rel`` counts as
        complete unless ``complete=False`` (a file written in several parts)."""
        try:
            yield self.path / rel
        except OSError as exc:
            self.finish("failed", error=f"{rel}: {exc}")
            done = set(self.completed)
            raise write_failure(exc, self.path / rel, self.completed,
                                [e for e in self.expected if e not in done], self.path) from exc
        if complete:
            self.completed.append(rel)

    def finish(self, status: str = "finished", **info) -> None:
        """Mark the run finished (or ``failed``); a failure to record a failure is ignored."""
        try:
            self._append({"status": status, "at": _now(), **info})
        except OSError:
            if status == "finished":
                raise

    def _append(self, record: dict) -> None:
        with open(self.path / MANIFEST_NAME, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")


def _inside(rel) -> bool:
    """A manifest entry may only name a path inside its folder (never absolute, never ``..``)."""
    p = Path(str(rel))
    return isinstance(rel, str) and bool(rel) and not p.is_absolute() and ".." not in p.parts


class Manifest(NamedTuple):
    header: Dict
    owned: List[str]  # claimed before writing (complete or not)
    status: Optional[str]  # "finished", "failed", "interrupted", or None (cut off)
    done: List[str]  # written completely


def read_manifest(path) -> Manifest:
    """What a manifest says; a missing or broken one is empty (a line cut by an interruption is skipped)."""
    header: Dict = {}
    owned: List[str] = []
    done: List[str] = []
    status = None
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return Manifest(header, owned, status, done)
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if "vidseg_manifest" in rec:
            header = rec
        owned += [str(f) for f in rec.get("files", []) if _inside(f)]
        released = {str(f) for f in rec.get("released", [])}
        owned = [o for o in owned if o not in released]
        done += [str(f) for f in rec.get("done", []) if _inside(f)]
        if "status" in rec:
            status = rec["status"]
    return Manifest(header, owned, status, done)
