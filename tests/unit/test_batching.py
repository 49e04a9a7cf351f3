from dataclasses import dataclass

import pytest

from adcast.core.batching import MicroBatcher


@dataclass(frozen=True)
class Req:
    user_id: str
    version: int


def test_newest_version_per_user_wins_whatever_the_arrival_order():
    b: MicroBatcher[Req] = MicroBatcher(max_size=10, max_wait_ms=100)
    for user, version in [("u1", 5), ("u2", 1), ("u1", 9), ("u1", 7)]:
        b.add(Req(user, version), now_ms=0)
    assert b.superseded == 2
    assert sorted(b.take(), key=lambda r: r.user_id) == [Req("u1", 9), Req("u2", 1)]
    assert len(b) == 0 and b.superseded == 0


def test_ready_when_full_or_when_the_oldest_waited_long_enough():
    b: MicroBatcher[Req] = MicroBatcher(max_size=2, max_wait_ms=100)
    assert not b.ready(0)
    b.add(Req("u1", 1), now_ms=1000)
    assert not b.ready(1099) and b.wait_ms(1050) == 50
    assert b.ready(1100)
    b.add(Req("u2", 1), now_ms=1001)
    assert b.ready(1001)


def test_same_user_does_not_fill_a_batch():
    b: MicroBatcher[Req] = MicroBatcher(max_size=2, max_wait_ms=1000)
    b.add(Req("u1", 1), 0)
    b.add(Req("u1", 2), 0)
    assert not b.ready(1)


def test_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        MicroBatcher(max_size=0)
