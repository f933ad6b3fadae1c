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
