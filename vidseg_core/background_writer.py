"""Writes a batch's outputs on one background thread while the next batch is computed.

The pipeline hands each batch's write job (label PNGs, overlay frames) to :class:`BackgroundWriter`
and goes on with the next batch.  Jobs run one at a time in the order given, so the files are the same,
byte for byte, as when written in the main thread.  At most ``depth`` jobs wait (each holds one batch's
label maps), so memory stays bounded: a slow disk makes :meth:`submit` wait instead of piling up batches.

An error in a job is raised again, unchanged, in the main thread at the next :meth:`submit` or at
:meth:`close`; later jobs are skipped (nothing is written after the failure, as in a serial run).
``depth=0`` runs every job at once in the caller's thread (the serial behaviour, for debugging).

    with BackgroundWriter(2) as writer:
        for batch in batches:
            writer.submit(lambda batch=batch: write(batch))
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Optional

_STOP = object()


class BackgroundWriter:
    """``submit(job)`` runs ``job()`` on the writer thread; ``close()`` waits for every job and raises a job's error.

    ``busy_seconds``: time spent in jobs; ``wait_seconds``: time the caller waited for a free slot or at close.
    """

    def __init__(self, depth: int = 2, name: str = "vidseg-writer"):
        if int(depth) < 0:
            raise ValueError(f"depth {depth} must be >= 0")
        self.depth = int(depth)
        self.busy_seconds = 0.0
        self.wait_seconds = 0.0
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        if self.depth:
            self._queue: "queue.Queue" = queue.Queue(maxsize=self.depth)
            self._thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._thread.start()

    def _run(self, job: Callable[[], None]) -> None:
        t = time.perf_counter()
        try:
            job()
        finally:
            self.busy_seconds += time.perf_counter() - t

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if self._error is None:  # after a failure the remaining jobs are dropped, not run
                try:
                    self._run(job)
                except BaseException as exc:  # handed to the main thread
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` after the earlier ones; raises an earlier job's error instead of queueing."""
        if self._thread is None:
            self._run(job)
            return
        self._raise_error()
        t = time.perf_counter()
        self._queue.put(job)
        self.wait_seconds += time.perf_counter() - t

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        """Wait for the jobs; a job's error is raised unless the block already fails (its error is kept)."""
        self.close(raise_errors=exc_type is None)
        return False

    def close(self, raise_errors: bool = True) -> None:
        """Wait until every queued job ran (or was dropped after a failure); then raise a job's error.

        ``raise_errors=False`` (the caller is already failing): wait for the jobs, keep the caller's error.
        """
        if self._thread is not None and self._thread.is_alive():
            t = time.perf_counter()
            self._queue.put(_STOP)
            self._thread.join()
            self.wait_seconds += time.perf_counter() - t
        if raise_errors:
            self._raise_error()
