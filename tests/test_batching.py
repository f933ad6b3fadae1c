import pytest

from vidseg_core.batching import plan_batches
from vidseg_core.errors import InputError


def _written(batches):
    return [f for b in batches for f in b.written]


@pytest.mark.parametrize("n", [1, 5, 13, 14, 15, 28, 50, 200])
@pytest.mark.parametrize("tail", ["overlap", "short"])
def test_every_frame_written_once_in_order(n, tail):
    batches = plan_batches(n, 14, tail)
    assert _written(batches) == list(range(n))
    for b in batches:
        assert 0 <= b.start <= b.write_start < b.stop <= n
        assert b.size <= 14


def test_no_redundant_batch_when_divisible():
    assert [(b.start, b.stop) for b in plan_batches(28, 14)] == [(0, 14), (14, 28)]


def test_overlapping_tail_keeps_full_context_but_writes_new_frames_only():
    b = plan_batches(50, 14)
    assert [(x.start, x.stop, x.write_start) for x in b] == [(0, 14, 0), (14, 28, 14), (28, 42, 28), (36, 50, 42)]
    assert b[-1].write_offset == 6


def test_short_clip_is_one_short_batch():
    assert [(b.start, b.stop) for b in plan_batches(5, 14)] == [(0, 5)]
    assert [(b.start, b.stop) for b in plan_batches(50, 14, "short")][-1] == (42, 50)


def test_bad_input():
    with pytest.raises(InputError, match="no frames"):
        plan_batches(0)
    with pytest.raises(InputError):
        plan_batches(3, 0)
