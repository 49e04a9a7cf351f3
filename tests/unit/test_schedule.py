"""The learning-rate schedule with and without a time box (adcast.train.schedule), on a fake clock."""

import math

import pytest

torch = pytest.importorskip("torch")

from adcast.errors import ConfigError  # noqa: E402
from adcast.train import schedule  # noqa: E402
from adcast.train.distributed import Ranks  # noqa: E402


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(schedule.time, "monotonic", fake)
    return fake


def _lrs(box, total, steps, advance=0.0, clock=None):
    """The learning rate of each of `steps` steps, the fake clock moved by `advance` s per step."""
    param = torch.nn.Parameter(torch.zeros(1))
    optim = torch.optim.SGD([param], lr=1.0)
    sched = schedule.cosine_schedule(optim, total, box)
    out = []
    for _ in range(steps):
        out.append(optim.param_groups[0]["lr"])
        optim.step()
        if clock is not None:
            clock.now += advance
        box.tick()
        sched.step()
    return out


def test_without_a_box_the_schedule_warms_up_then_decays_to_zero_over_the_steps(clock):
    total = 200
    lrs = _lrs(schedule.TimeBox(0, Ranks()), total, total + 1, advance=3600.0, clock=clock)
    warmup = total // schedule.WARMUP_PARTS
    assert lrs[0] == pytest.approx(1 / warmup * 0.5 * (1 + math.cos(0)))
    assert all(a < b for a, b in zip(lrs[: warmup - 1], lrs[1:warmup], strict=True))  # rising
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :], strict=False))  # then falling
    assert lrs[total] == pytest.approx(0.0, abs=1e-12)
    assert lrs[total // 2] == pytest.approx(0.5, abs=0.02)  # the clock plays no part


def test_a_time_box_decays_the_rate_by_the_clock_when_the_clock_runs_out_first(clock):
    box = schedule.TimeBox(1.0, Ranks())  # 60 s; each step takes 1 s: 60 steps of a planned 10,000
    lrs = _lrs(box, 10_000, 61, advance=1.0, clock=clock)
    assert not schedule.TimeBox(1.0, Ranks()).expired
    assert box.expired
    # Half the box spent: half-way down the cosine, though only 0.3 % of the steps are done.
    assert lrs[30] == pytest.approx(0.5, abs=0.01)
    assert lrs[60] == pytest.approx(0.0, abs=1e-12)
    assert max(lrs) == pytest.approx(1.0, abs=0.01)  # the warm-up ended on the clock, at 3 s
    assert lrs.index(max(lrs)) <= 4


def test_a_time_box_longer_than_the_steps_leaves_the_schedule_to_the_steps(clock):
    total = 100
    boxed = _lrs(schedule.TimeBox(600.0, Ranks()), total, total, advance=0.5, clock=clock)
    plain = _lrs(schedule.TimeBox(0, Ranks()), total, total)
    assert boxed == plain


def test_a_negative_box_and_an_uneven_global_batch_are_refused():
    with pytest.raises(ConfigError, match="max-minutes"):
        schedule.TimeBox(-1, Ranks())
    with pytest.raises(ConfigError, match="multiple of the batch size 16 times the 2 ranks"):
        schedule.accumulation_steps(48, 16, world=2)
    assert schedule.accumulation_steps(64, 16, world=2) == 2
    assert schedule.accumulation_steps(None, 16) == 1
