"""The background writer of ``segment``: in order, bounded, errors raised in the caller's thread."""
import threading

import pytest

from vidseg_core.background_writer import BackgroundWriter


def test_jobs_run_in_order_on_one_thread_with_a_bounded_queue():
    gate, done, threads = threading.Event(), [], set()

    def job(i):
        def run():
            gate.wait(5)
            threads.add(threading.current_thread().name)
            done.append(i)
        return run

    w = BackgroundWriter(depth=2)
    for i in range(3):  # one running (blocked on the gate) + 2 waiting: the queue is full
        w.submit(job(i))
    blocked = threading.Thread(target=w.submit, args=(job(3),))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive() and done == []  # a 4th batch waits for a free slot
    gate.set()
    blocked.join(5)
    w.close()
    assert done == [0, 1, 2, 3] and threads == {"vidseg-writer"}
    serial = BackgroundWriter(depth=0)
    serial.submit(lambda: threads.add(threading.current_thread().name))
    assert threading.current_thread().name in threads


def test_a_job_error_is_raised_in_the_caller_and_later_jobs_are_dropped():
    ran = []

    def fail():
        raise OSError(28, "No space left on device")

    w = BackgroundWriter(depth=2)
    w.submit(fail)
    w.submit(lambda: ran.append(1))  # may be queued before the failure is seen: then dropped
    with pytest.raises(OSError, match="No space"):
        w.close()
    with pytest.raises(OSError, match="No space"):
        w.submit(lambda: ran.append(2))
    assert ran == []
    w2 = BackgroundWriter(depth=1)
    w2.submit(fail)
    w2.close(raise_errors=False)  # the caller is already failing with its own error


def test_as_a_context_manager_the_blocks_own_error_wins():
    def fail():
        raise OSError(5, "I/O error")

    with pytest.raises(OSError, match="I/O error"):
        with BackgroundWriter(2) as w:
            w.submit(fail)
    with pytest.raises(KeyError):  # the caller's error, not the writer's
        with BackgroundWriter(2) as w:
            w.submit(fail)
            raise KeyError("caller")
