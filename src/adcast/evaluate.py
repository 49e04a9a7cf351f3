"""`adcast eval`: the model against the baselines an ads team runs first, under the fixed protocol.

Protocol: `cutoff` is the event time at `cutoff_fraction` of all events sorted by time. Targets
are the engagements (click, save, add_to_cart, checkout) with a known advertiser at or after the
cutoff; each target is predicted from the prompt of the user's newest version `serving_delay_ms`
before it (every event at least that old, impressions included, folded by the stream tier's code:
`core.examples.iter_examples`); the baselines see the same events. Popularity and co-occurrence are
fitted on events before the cutoff. "Best baseline" is the best of all of them at each K.
`union` is the complementary view: recall of the best baseline's top-K/2 merged with the model's
top-K/2 (deduplicated, filled to K), beside the best baseline's own top-K. `by_kind` splits
recall@10 by kind of target (repeat, return, new: `core.examples.target_kind`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adcast.core.baselines import Cooccurrence, Popularity, engaged_sequence, recent, recent_shown
from adcast.core.events import Event
from adcast.core.examples import (
    DEFAULT_CUTOFF_FRACTION,
    DEFAULT_SERVING_DELAY_MS,
    TARGET_KINDS,
    Example,
    cutoff_time,
    iter_examples,
    target_kind,
    to_event,
)
from adcast.core.history import HistoryLimits
from adcast.core.prompt import render
from adcast.core.ranking import merge_half_and_half, rank_of, recall_at, summarize
from adcast.data.files import read_records
from adcast.errors import ConfigError

BASELINES = ("popularity", "recent", "recent_shown", "cooccurrence")


def evaluate(
    data_dir: str | Path,
    model_dir: str | Path | None,
    cutoff_fraction: float = DEFAULT_CUTOFF_FRACTION,
    ks: Sequence[int] = (1, 5, 10, 50),
    engine: str = "torch",
    device: str = "cpu",
    limits: HistoryLimits | None = None,
    progress: bool = True,
    batch_size: int = 256,
    serving_delay_ms: int = DEFAULT_SERVING_DELAY_MS,
) -> dict[str, Any]:
    started = time.monotonic()
    limits = limits or HistoryLimits()
    k_max = max(ks)
    advertisers = {a["advertiser_id"] for a in read_records(data_dir, "advertisers")}
    profiles = {p["user_id"]: p["attributes"] for p in read_records(data_dir, "profiles")}
    records = list(read_records(data_dir, "events"))
    cutoff = cutoff_time((r["event_time"] for r in records), cutoff_fraction)
    before: dict[str, list[Event]] = defaultdict(list)
    for r in records:
        if r["event_time"] < cutoff:
            before[r["user_id"]].append(to_event(r))
    for seq in before.values():
        seq.sort(key=lambda e: (e.event_time, e.event_id))
    popularity = Popularity(e for seq in before.values() for e in seq)
    popular = popularity.rank(k_max)
    cooccurrence = Cooccurrence(engaged_sequence(seq) for seq in before.values())

    examples = list(
        iter_examples(
            records, profiles, advertisers, limits, start=cutoff, with_prior=True, serving_delay_ms=serving_delay_ms
        )
    )
    if not examples:
        raise ConfigError(f"no evaluation targets at or after the cutoff in {data_dir}")
    targets = [ex.target for ex in examples]
    lists: dict[str, list[list[str]]] = {
        "popularity": [popular] * len(examples),
        "recent": [recent(ex.prior, ex.event_time, k_max, popular) for ex in examples],
        "recent_shown": [recent_shown(ex.prior, ex.event_time, k_max, popular) for ex in examples],
        "cooccurrence": [cooccurrence.rank(ex.prior, k_max, popular) for ex in examples],
    }
    report: dict[str, Any] = {"targets": len(examples), "cutoff_time": cutoff, "serving_delay_ms": serving_delay_ms}
    report["baselines"] = {name: summarize(_ranks(lists[name], targets), ks) for name in BASELINES}

    if model_dir is not None:
        prompts = [render(ex) for ex in examples]
        model_lists = score_prompts(prompts, model_dir, k_max, engine, device, progress, batch_size)
        report["model"] = summarize(_ranks(model_lists, targets), ks)
        lists = {"model": model_lists, **lists}
        report["union"] = {}
        for k in ks:
            best = max(BASELINES, key=lambda name: report["baselines"][name][f"recall@{k}"])
            merged = [merge_half_and_half(b, m, k) for b, m in zip(lists[best], model_lists, strict=True)]
            report["union"][f"recall@{k}"] = recall_at(_ranks(merged, targets), k)
            report["union"][f"best_baseline@{k}"] = best
            report["union"][f"best_baseline_recall@{k}"] = report["baselines"][best][f"recall@{k}"]
    report["by_kind"] = _by_kind(examples, lists, 10 if 10 in ks else k_max)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def score_prompts(
    prompts: Sequence[str],
    model_dir: str | Path,
    k: int,
    engine: str = "torch",
    device: str = "cpu",
    progress: bool = True,
    batch_size: int = 256,
    desc: str = "eval",
) -> list[list[str]]:
    """The model's top-k advertiser ids for each prompt, in order, scored by `engine`."""
    from tqdm import tqdm

    from adcast.engines import create_engine

    scorer = create_engine(engine, str(model_dir), device)
    out: list[list[str]] = []
    try:
        with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress, mininterval=0.5) as bar:
            for i in range(0, len(prompts), batch_size):
                chunk = scorer.score(list(prompts[i : i + batch_size]), k)
                out.extend([a for a, _ in top] for top in chunk)
                bar.update(len(chunk))
    finally:
        scorer.close()
    return out


def _by_kind(examples: Sequence[Example], lists: dict[str, list[list[str]]], k: int) -> dict[str, dict[str, Any]]:
    """Recall@k of each method on each kind of target (repeat, return, new): where the model
    wins and where a baseline does."""
    out: dict[str, dict[str, Any]] = {}
    kinds = [target_kind(ex) for ex in examples]
    for kind in TARGET_KINDS:
        rows = [i for i, x in enumerate(kinds) if x == kind]
        if not rows:
            continue
        targets = [examples[i].target for i in rows]
        out[kind] = {"targets": len(rows)} | {
            name: {f"recall@{k}": recall_at(_ranks([ranked[i] for i in rows], targets), k)}
            for name, ranked in lists.items()
        }
    return out


def _ranks(lists: Sequence[Sequence[str]], targets: Sequence[str]) -> list[int | None]:
    return [rank_of(t, ranked) for ranked, t in zip(lists, targets, strict=True)]


def format_table(report: dict[str, Any]) -> str:
    rows = [("model", report["model"])] if "model" in report else []
    rows += list(report["baselines"].items())
    metrics = list(rows[0][1])
    lines = [f"{'method':<14}" + "".join(f"{m:>11}" for m in metrics)]
    lines += [f"{name:<14}" + "".join(f"{values[m]:>11.4f}" for m in metrics) for name, values in rows]
    if "union" in report:
        u = report["union"]
        recalls = [m for m in metrics if m.startswith("recall@")]
        lines.append(f"{'union':<14}" + "".join(f"{u[m]:>11.4f}" for m in recalls))
        lines.append(
            f"{'best baseline':<14}"
            + "".join(f"{u['best_' + 'baseline_' + m]:>11.4f}" for m in recalls)
            + "   ("
            + ", ".join(f"{m}: {u['best_baseline@' + m.split('@')[1]]}" for m in recalls)
            + ")"
        )
    lines.append(f"targets: {report['targets']}")
    if report.get("by_kind"):
        lines += ["", _format_by_kind(report["by_kind"])]
    return "\n".join(lines)


def _format_by_kind(by_kind: dict[str, dict[str, Any]]) -> str:
    first = next(iter(by_kind.values()))
    methods = [m for m in first if m != "targets"]
    metric = next(iter(first[methods[0]]))
    lines = [
        f"{metric} by kind of target (repeat: the advertiser of the last event; return: another of the "
        "user's own advertisers; new: one they had not engaged with)",
        f"{'kind':<14}{'targets':>11}" + "".join(f"{m:>14}" for m in methods),
    ]
    for kind, row in by_kind.items():
        lines.append(f"{kind:<14}{row['targets']:>11}" + "".join(f"{row[m][metric]:>14.4f}" for m in methods))
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    series = ([("model", report["model"])] if "model" in report else []) + list(report["baselines"].items())
    if "union" in report:
        series.append(("union", report["union"]))
    for name, values in series:
        ks = sorted(int(m.split("@")[1]) for m in values if m.startswith("recall@"))
        ax.plot(ks, [values[f"recall@{k}"] for k in ks], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_title(f"Next-advertiser recall ({report['targets']} targets)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
