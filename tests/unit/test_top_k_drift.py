"""What an LLM call changed for a reader of the top 10: core.ranking.top_k_drift, and the drift of
the predictions `adcast bench e2e` reads back from the affinities topic."""

from __future__ import annotations

import pytest

from adcast.bench.e2e_report import reason_of, taken_predictions
from adcast.core.ranking import top_k_drift
from adcast.wire import serde


def test_drift_is_the_share_of_the_new_top_k_the_old_one_did_not_hold():
    old = [f"a{i}" for i in range(10)]
    assert top_k_drift(old, old) == 0.0
    assert top_k_drift(old, list(reversed(old))) == 0.0  # reordering replaces nothing
    assert top_k_drift(old, ["b0", "b1", *old[:8]]) == pytest.approx(0.2)
    assert top_k_drift(old, [f"b{i}" for i in range(10)]) == 1.0
    assert top_k_drift(old, old[:9] + ["a10"], k=5) == 0.0  # only the top k counts
    assert top_k_drift([], ["a0", "a1"]) == 1.0 and top_k_drift(old, []) == 0.0


def _update(user: str, version: int, top: list[str], at: int = 2_000, reason: str = "quiet") -> tuple[bytes, str]:
    record = {
        "user_id": user,
        "version": version,
        "model_version": "m",
        "computed_at": at,
        "newest_event_time": 1_000,
        "advertisers": [{"advertiser_id": a, "probability": 0.1} for a in top],
    }
    return serde.encode(serde.AFFINITY, record), reason


def test_drift_is_taken_per_user_between_the_predictions_redis_took():
    updates = [
        _update("u1", 5, ["a", "b"]),
        _update("u2", 3, ["x", "y"]),
        _update("u1", 4, ["q", "r"]),  # an older version, lost the check: neither fresh nor drift
        _update("u1", 7, ["a", "c"], at=3_500),
        _update("u2", 9, ["x", "y"]),
        _update("u2", 10, ["x", "z"], at=31_000, reason="settle"),  # late on purpose: drift, no freshness
    ]
    fresh, drift = taken_predictions(updates)
    assert fresh == {"quiet": [1.0, 1.0, 2.5, 1.0]}
    assert drift == [0.5, 0.0, 0.5]  # u1: c replaced b; u2: nothing changed, then z replaced y


def test_the_reason_is_read_from_the_update_headers():
    assert reason_of([("adcast-slot", b"g0"), ("adcast-reason", b"settle")]) == "settle"
    assert reason_of(None) == "" and reason_of([("adcast-slot", b"g0")]) == ""
