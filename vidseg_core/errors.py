"""Errors that name the problem and the fix.

Every user-facing failure of the core raises a :class:`VidSegError` (or a
subclass) whose message says what is wrong and what to do about it, instead of
a bare traceback from deep inside torch or numpy.
"""
from __future__ import annotations


class VidSegError(Exception):
    """Base class: a readable problem statement plus the fix."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} Fix: {fix}")


class InputError(VidSegError, ValueError):
    """Bad user input: wrong shape, too few frames, wrong mask size, ..."""


class ModelLoadError(VidSegError):
    """A checkpoint is missing, corrupt, incomplete or of another model family."""


class DeviceError(VidSegError):
    """An unsupported device / precision combination."""


class OutOfMemoryError(VidSegError, MemoryError):
    """The work did not fit in memory even after retrying smaller chunks."""


class NumericalError(VidSegError):
    """The model's computation produced NaN values (e.g. an fp16 overflow)."""


class OutputError(VidSegError):
    """An output folder or file cannot be used: not writable, inside the input, or holding files VidSeg did not write."""


class DependencyError(VidSegError, ImportError):
    """A required library is missing, or does not work with the installed torch."""
