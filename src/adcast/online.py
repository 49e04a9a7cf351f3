"""`adcast eval --online`: the model as the pipeline serves it, under each trigger policy.

The evaluation period of a data directory (events at or after the cutoff of `adcast eval`) is
replayed through the stream tier's fold and trigger policy on the events' own clock
(`adcast.core.simulation`). Each call's prompt is scored by the engine and becomes visible
`serving_delay_ms` after the call; each engagement is judged against the newest prediction visible
when it happens (none visible is a miss, and its share is reported). Three policies run side by
side on the same events: `every_change` (every change scored at once), `engagements` (impressions
never trigger) and `value` (the default). A prompt is a function of the user's version, so a
version several policies call is scored once.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from adcast.core.examples import DEFAULT_CUTOFF_FRACTION, DEFAULT_SERVING_DELAY_MS, TARGET_KINDS, cutoff_time, to_event
from adcast.core.history import HistoryLimits
from adcast.core.ranking import rank_of, recall_at, top_k_drift
from adcast.core.simulation import UserRun, replay_user
from adcast.core.triggers import POLICIES, TriggerPolicy
from adcast.data.files import read_records
from adcast.errors import ConfigError
from adcast.evaluate import score_prompts

HIT_K = 10


def evaluate_online(
    data_dir: str | Path,
    model_dir: str | Path,
    policy: TriggerPolicy,
    cutoff_fraction: float = DEFAULT_CUTOFF_FRACTION,
    ks: Sequence[int] = (1, 5, 10, 50),
    engine: str = "torch",
    device: str = "cpu",
    limits: HistoryLimits | None = None,
    serving_delay_ms: int = DEFAULT_SERVING_DELAY_MS,
    progress: bool = True,
    shown_intervals: Sequence[int] = (),
) -> dict[str, Any]:
    """The three policies' figures on `data_dir`; `policy` gives the timings (quiet, delay,
    interval, settle) they share. `shown_intervals` adds the `value` policy at each of these
    intervals for ads shown alone (ms): points of the budget curve between the three."""
    started = time.monotonic()
    limits = limits or HistoryLimits()
    advertisers = {a["advertiser_id"] for a in read_records(data_dir, "advertisers")}
    profiles = {p["user_id"]: p["attributes"] for p in read_records(data_dir, "profiles")}
    by_user: dict[str, list[Any]] = defaultdict(list)
    for r in read_records(data_dir, "events"):
        by_user[r["user_id"]].append(to_event(r))
    if not by_user:
        raise ConfigError(f"no events in {data_dir}")
    for seq in by_user.values():
        seq.sort(key=lambda e: (e.event_time, e.event_id))
    cutoff = cutoff_time((e.event_time for seq in by_user.values() for e in seq), cutoff_fraction)
    end = max(seq[-1].event_time for seq in by_user.values())
    runs: dict[str, list[UserRun]] = {}
    policies = _policies(policy, shown_intervals)
    for name, p in policies.items():
        runs[name] = [
            replay_user(by_user[u], profiles.get(u, {}), p, limits, advertisers, cutoff, end, serving_delay_ms)
            for u in sorted(by_user)
        ]
    if not any(run.judged for run in runs["every_change"]):
        raise ConfigError(f"no engagements to judge at or after the cutoff in {data_dir}")
    ranked = _score_calls(runs, model_dir, max(ks), engine, device, progress)
    report: dict[str, Any] = {
        "data": str(data_dir),
        "cutoff_time": cutoff,
        "serving_delay_ms": serving_delay_ms,
        "shown_interval_ms": policy.shown_interval_ms,  # the value policy's, for ads shown alone
        "policies": {name: _figures(runs[name], ranked, ks) for name in policies},
    }
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def sweep_name(shown_interval_ms: int) -> str:
    return f"value@{shown_interval_ms}ms"


def _policies(policy: TriggerPolicy, shown_intervals: Sequence[int]) -> dict[str, TriggerPolicy]:
    # `engagements` is the engagement-only baseline: impressions neither trigger nor settle.
    out: dict[str, TriggerPolicy] = {
        name: replace(policy, name=name, settle_ms=None if name == "engagements" else policy.settle_ms)
        for name in POLICIES
    }
    for ms in shown_intervals:
        out[sweep_name(ms)] = replace(policy, name="value", shown_interval_ms=ms)
    return out


def _score_calls(
    runs: dict[str, list[UserRun]], model_dir: str | Path, k: int, engine: str, device: str, progress: bool
) -> dict[str, list[str]]:
    """Each distinct prompt of every policy's calls, scored once: prompt -> top-k ids."""
    prompts = sorted({call.prompt for user_runs in runs.values() for run in user_runs for call in run.calls})
    return dict(
        zip(prompts, score_prompts(prompts, model_dir, k, engine, device, progress, desc="online"), strict=True)
    )


def _figures(user_runs: list[UserRun], ranked: dict[str, list[str]], ks: Sequence[int]) -> dict[str, Any]:
    ranks: list[int | None] = []
    kinds: list[str] = []
    unseen = 0
    drifts: list[float] = []
    reasons: Counter[str] = Counter()
    for run in user_runs:
        tops = [ranked[call.prompt] for call in run.calls]
        for judged in run.judged:
            unseen += judged.call is None
            ranks.append(None if judged.call is None else rank_of(judged.target, tops[judged.call]))
            kinds.append(judged.kind)
        for i in range(run.first_counted, len(run.calls)):
            reasons[run.calls[i].reason] += 1
            if i > 0:
                drifts.append(top_k_drift(tops[i - 1], tops[i], HIT_K))
    calls, events, targets = sum(reasons.values()), sum(r.events for r in user_runs), len(ranks)
    out: dict[str, Any] = {
        f"hit@{HIT_K}": recall_at(ranks, HIT_K),
        **{f"recall@{k}": recall_at(ranks, k) for k in ks},
        "targets": targets,
        "no_prediction_share": unseen / targets if targets else 0.0,
        "events": events,
        "calls": calls,
        "calls_per_event": calls / events if events else 0.0,
        "calls_per_engagement": calls / targets if targets else 0.0,
        "calls_by_reason": dict(sorted(reasons.items())),
        f"top{HIT_K}_drift_mean": sum(drifts) / len(drifts) if drifts else 0.0,
    }
    out["by_kind"] = {
        kind: {
            "targets": kinds.count(kind),
            f"hit@{HIT_K}": recall_at([r for r, x in zip(ranks, kinds, strict=True) if x == kind], HIT_K),
        }
        for kind in TARGET_KINDS
        if kind in kinds
    }
    return out


def format_table(report: dict[str, Any]) -> str:
    policies = report["policies"]
    k = f"hit@{HIT_K}"
    lines = [
        f"online, serving delay {report['serving_delay_ms']} ms: each engagement judged against the newest "
        "prediction visible when it happened",
        f"{'policy':<14}{k:>9}{'repeat':>9}{'return':>9}{'new':>9}{'no pred.':>10}"
        f"{'calls/event':>13}{'calls/eng.':>12}{'drift':>8}",
    ]
    for name, f in policies.items():
        by_kind = [f["by_kind"].get(kind, {}).get(k, float("nan")) for kind in TARGET_KINDS]
        lines.append(
            f"{name:<14}{f[k]:>9.4f}"
            + "".join(f"{v:>9.4f}" for v in by_kind)
            + f"{f['no_prediction_share']:>10.4f}{f['calls_per_event']:>13.4f}{f['calls_per_engagement']:>12.3f}"
            f"{f[f'top{HIT_K}_drift_mean']:>8.3f}"
        )
    first = next(iter(policies.values()))
    lines.append(f"targets: {first['targets']}, events: {first['events']}")
    for name, f in policies.items():
        lines.append(f"calls by reason, {name}: " + ", ".join(f"{r} {n}" for r, n in f["calls_by_reason"].items()))
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str | Path) -> None:
    """hit@10 against LLM calls per event, a point per policy: the budget curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    policies = report["policies"]
    points = sorted((f["calls_per_event"], f[f"hit@{HIT_K}"], name) for name, f in policies.items())
    main = [p for p in points if p[2] in POLICIES]
    ax.plot([x for x, _, _ in main], [y for _, y, _ in main], color="0.7", zorder=1)
    for x, y, name in main:
        shown = f" ({report['shown_interval_ms'] / 1000:g} s)" if name == "value" else ""
        ax.scatter([x], [y], zorder=3, label=f"{name}{shown}: {y:.3f} at {x:.3f} calls/event")
    family = [p for p in points if p[2] == "value" or p[2].startswith("value@")]
    if len(family) > 1:  # the value policy at other intervals for ads shown alone
        ax.plot([x for x, _, _ in family], [y for _, y, _ in family], "--", color="C1", alpha=0.6, zorder=2)
        labelled: list[tuple[float, float]] = []
        for x, y, name in family:
            if name == "value":
                continue
            ax.scatter([x], [y], s=12, color="C1", zorder=2)
            if any(abs(x - u) < 0.01 and abs(y - v) < 0.01 for u, v in labelled):
                continue  # the same point as one labelled already: intervals that change nothing here
            seconds = int(name.removeprefix("value@").removesuffix("ms")) / 1000
            up = len(labelled) % 2
            ax.annotate(f"{seconds:g} s", (x, y), textcoords="offset points", xytext=(3, 4 if up else -11), fontsize=7)
            labelled.append((x, y))
    ax.set_xlim(0, max(x for x, _, _ in points) * 1.08)
    ax.set_xlabel("LLM calls per event")
    ax.set_ylabel(f"hit@{HIT_K} (prediction visible at the engagement)")
    targets = next(iter(policies.values()))["targets"]
    ax.set_title(f"{Path(report['data']).name}: {targets} engagements, serving delay {report['serving_delay_ms']} ms")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
