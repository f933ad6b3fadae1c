"""The server-memory tool's sampler (``tools/measure_server_memory.py``) on this process (Linux ``/proc``)."""
from __future__ import annotations

import os
import sys

import pytest

from tools.measure_server_memory import Sampler, proc_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_sampler_records_a_peak_and_stops():
    mem = proc_memory(os.getpid())
    assert mem["VmRSS"] > 0 and mem["VmHWM"] >= mem["VmRSS"]
    sampler = Sampler(os.getpid(), 0.01)
    sampler.start()
    block = bytearray(64 * 2**20)  # touched: resident
    block[::4096] = b"x" * len(block[::4096])
    sampler.stop()  # a stop event named like Thread._stop broke this join
    assert not sampler.is_alive() and sampler.samples >= 1
    assert sampler.peak >= mem["VmRSS"]
    del block


def test_progress_record_keeps_the_figures_so_far(tmp_path, capsys):
    """A run cut off before its end still leaves its record: the JSON is rewritten at each trace point."""
    import json
    import time

    from tools.measure_server_memory import ProgressRecord

    out = tmp_path / "run.json"
    record = ProgressRecord(out, every=0.0, before=proc_memory(os.getpid()), extra={"frames": 4000})
    sampler = Sampler(os.getpid(), 0.005, trace_every=0.02, on_trace=record)
    sampler.start()
    deadline = time.monotonic() + 10.0
    while len(sampler.trace) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    figs = json.loads(out.read_text())
    assert figs["finished"] is False and figs["frames"] == 4000
    assert len(figs["trace"]) >= 3 and figs["vm_hwm"] >= figs["rss_peak_sampled"] > 0
    assert figs["elapsed"] == figs["trace"][-1][0]
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind
    assert "high-water mark" in capsys.readouterr().out
