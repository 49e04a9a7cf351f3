"""Replay pacing on a clock the test drives: every event is released when it is due, never before."""

import pytest

from adcast.errors import ConfigError
from adcast.replay import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def released(pacer: Pacer, clock: Clock, event_times: list[int], work_s: float = 0.0) -> list[float]:
    """When each event was let through, relative to the first; `work_s` passes between events."""
    out = []
    for n, t in enumerate(event_times):
        pacer.wait(n, t)
        out.append(round(clock.now - 100.0, 9))
        clock.now += work_s
    return out


def test_speedup_releases_each_event_at_its_original_time_divided_by_the_speedup():
    clock = Clock()
    times_ms = [0, 100, 100, 400, 1700, 2000, 2900, 3000]
    got = released(Pacer(None, 2.0, clock, clock.sleep), clock, [1_000_000 + t for t in times_ms])
    assert got == [t / 1000 / 2 for t in times_ms]


def test_rate_releases_the_nth_event_at_n_over_rate_and_catches_up_after_slow_work():
    clock = Clock()
    got = released(Pacer(4.0, None, clock, clock.sleep), clock, [0] * 6, work_s=0.6)
    # events are due every 0.25 s; work of 0.6 s per event makes each one late: no sleeping then
    assert got[0] == 0.0 and all(b - a == pytest.approx(0.6) for a, b in zip(got, got[1:], strict=False))
    assert clock.sleeps == []
    clock2 = Clock()
    assert released(Pacer(4.0, None, clock2, clock2.sleep), clock2, [0] * 4) == [0.0, 0.25, 0.5, 0.75]


def test_no_pacing_never_sleeps_and_bad_settings_are_refused():
    clock = Clock()
    assert released(Pacer(None, None, clock, clock.sleep), clock, [5, 1, 9]) == [0.0, 0.0, 0.0]
    assert clock.sleeps == []
    for rate, speedup in [(1.0, 2.0), (0.0, None), (None, -1.0)]:
        with pytest.raises(ConfigError):
            Pacer(rate, speedup)
