"""The status page's and ``spctl top``'s history rings (supervisor.rules.history)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.rules.history import Point, Ring, Rings, sparkline


def _p(at: float, rss: int | None = 1, cpu: float | None = 0.0, state: str = "running") -> Point:
    return Point(at=at, rss=rss, cpu=cpu, state=state)


def test_ring_keeps_the_last_capacity_points_in_order() -> None:
    ring = Ring(capacity=3, period=2.0)
    for i in range(5):
        ring.add(_p(100.0 + 2 * i, rss=i))
    assert ring.export()["rss"] == [2, 3, 4]
    assert ring.export()["at"] == [104.0, 106.0, 108.0]


def test_a_point_in_the_same_slot_replaces_the_last() -> None:
    ring = Ring(capacity=10, period=2.0)
    ring.add(_p(100.0, rss=1))
    ring.add(_p(101.0, rss=2, state="backoff"))  # same 2 s slot: newest wins
    ring.add(_p(102.5, rss=3))  # next slot
    assert ring.export()["rss"] == [2, 3]
    assert ring.export()["state"] == ["backoff", "running"]


def test_polling_faster_than_the_period_still_advances() -> None:
    ring = Ring(capacity=100, period=2.0)
    for i in range(20):  # every 0.5 s for 10 s
        ring.add(_p(1000.0 + 0.5 * i))
    assert len(ring.points) == 5


def test_a_clock_going_back_is_dropped() -> None:
    ring = Ring(capacity=10, period=1.0)
    ring.add(_p(10.0, rss=1))
    ring.add(_p(5.0, rss=2))
    assert ring.export()["rss"] == [1]


def test_missing_values_stay_none_and_cpu_is_rounded() -> None:
    ring = Ring(capacity=10, period=1.0)
    ring.add(_p(1.0, rss=None, cpu=None, state="stopped"))
    ring.add(_p(2.0, cpu=0.123456789))
    assert ring.export()["cpu"] == [None, 0.1235]
    assert ring.export()["rss"] == [None, 1]


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Ring(capacity=0)
    with pytest.raises(ValueError, match="period"):
        Ring(period=-1)


def test_rings_by_name_retain_and_export() -> None:
    rings = Rings(capacity=4, period=2.0)
    rings.add("a", _p(1.0))
    rings.add("b", _p(1.0))
    rings.retain(["a"])
    out = rings.export()
    assert out["period"] == 2.0
    assert out["capacity"] == 4
    assert list(out["series"]) == ["a"]
    assert rings.export("a")["series"]["a"]["state"] == ["running"]
    assert rings.export("zzz")["series"] == {}


@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=300))
def test_ring_is_bounded_ordered_and_spaced(times: list[float]) -> None:
    ring = Ring(capacity=50, period=2.0)
    for at in times:
        ring.add(_p(at))
    ats = [p.at for p in ring.points]
    assert len(ats) <= 50
    assert ats == sorted(ats)
    slots = [int(a // 2.0) for a in ats]
    assert len(set(slots)) == len(slots)


def test_sparkline_scales_to_the_maximum() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5], 3) == "███"  # scaled from 0
    assert sparkline([0, 0, 0], 3) == "▁▁▁"
    assert sparkline([5, 5, 5], 3, floor=5) == "▁▁▁"
    assert sparkline([None, 2, None, 4], 4) == " ▅ █"
    assert sparkline([1, 2, 3, 4], 2) == "▆█"  # the last width values
    assert sparkline([], 5) == ""
    assert sparkline([None, None], 5) == "  "
    assert sparkline([1, 2], 0) == ""
