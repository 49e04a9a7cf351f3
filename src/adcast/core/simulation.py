"""The stream tier on the events' own clock: which prompts a trigger policy sends for scoring, and
which prediction each engagement meets.

Per user, events are folded in time order by the stream tier's code (`fold_event`), the policy
notes each change and is asked at exactly the times the stream tier's checks would find the user
due (`next_check_ms`), and every call becomes visible `serving_delay_ms` after it is made. An
engagement is judged against the newest prediction visible when it happens; none visible is a
miss. No engine here: `adcast.online` scores the calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from adcast.core.events import ENGAGEMENTS, Event
from adcast.core.examples import target_kind_of
from adcast.core.history import HistoryLimits, UserHistory, fold_event, ranked_advertisers
from adcast.core.prompt import render
from adcast.core.requests import PredictionRequest
from adcast.core.triggers import TriggerPolicy, mark_emitted


@dataclass(frozen=True, slots=True)
class Call:
    """One prompt sent for scoring: when, why, and what (the request the stream tier would send,
    and its prompt as the inference tier renders it)."""

    at: int
    reason: str
    request: PredictionRequest
    prompt: str


@dataclass(frozen=True, slots=True)
class Judged:
    """An engagement of the evaluation period and the call whose prediction it meets (an index
    into the user's calls), or None when no prediction was visible yet."""

    target: str
    kind: str
    call: int | None


@dataclass(slots=True)
class UserRun:
    """One user's calls (those before `start` reduced to the newest, which may still be visible)
    and judged engagements; events and calls counted from `start` on."""

    calls: list[Call] = field(default_factory=list)
    judged: list[Judged] = field(default_factory=list)
    events: int = 0
    first_counted: int = 0  # index in `calls` of the first call made at or after `start`

    @property
    def counted_calls(self) -> int:
        return len(self.calls) - self.first_counted


class _Replay:
    def __init__(
        self, history: UserHistory, policy: TriggerPolicy, limits: HistoryLimits, delay_ms: int, start: int
    ) -> None:
        self.history, self.policy, self.limits = history, policy, limits
        self.delay_ms, self.start = delay_ms, start
        self.run = UserRun()
        self.check_at: int | None = None

    def advance_to(self, t: int) -> None:
        """Make every call the stream tier's checks would make at or before time t."""
        while self.check_at is not None and self.check_at <= t:
            now = self.check_at
            reason = self.policy.decide(self.history, now)
            if reason is not None:
                self._call(now, reason)
            if self.policy.waiting(self.history):
                self.check_at = max(self.policy.next_check_ms(self.history), now + 1)
            else:
                self.check_at = None

    def _call(self, now: int, reason: str) -> None:
        run = self.run
        if now < self.start and run.calls:
            run.calls.pop()  # only the newest call before the period can still be met in it
        request = PredictionRequest.from_history(self.history, reason, now, self.limits)
        run.calls.append(Call(now, reason, request, render(request)))
        if now < self.start:
            run.first_counted = len(run.calls)
        mark_emitted(self.history, now)

    def visible_call(self, t: int) -> int | None:
        """The newest call whose prediction is visible at time t."""
        calls = self.run.calls
        for i in range(len(calls) - 1, -1, -1):
            if calls[i].at + self.delay_ms <= t:
                return i
        return None

    def fold(self, e: Event, offset: int) -> None:
        change = fold_event(self.history, e, offset, self.limits)
        if self.policy.note(self.history, change, e.event_time):
            self.check_at = self.policy.next_check_ms(self.history)


def replay_user(
    ordered: Sequence[Event],
    profile: Mapping[str, str],
    policy: TriggerPolicy,
    limits: HistoryLimits,
    advertisers: set[str],
    start: int,
    end: int,
    serving_delay_ms: int,
) -> UserRun:
    """Replay one user's events (sorted by time, then id) through the fold and the policy, up to
    time `end` (the calls still due by then are made)."""
    history = UserHistory(ordered[0].user_id if ordered else "", profile=dict(profile))
    replay = _Replay(history, policy, limits, serving_delay_ms, start)
    for offset, e in enumerate(ordered):
        replay.advance_to(e.event_time)
        if e.event_time >= start:
            replay.run.events += 1
            if e.event_type in ENGAGEMENTS and e.advertiser_id in advertisers and history.events:
                kind = target_kind_of(history.events, ranked_advertisers(history, limits), e.advertiser_id)
                replay.run.judged.append(Judged(e.advertiser_id, kind, replay.visible_call(e.event_time)))
        replay.fold(e, offset)
    replay.advance_to(end)
    return replay.run
