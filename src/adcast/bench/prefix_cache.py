"""`adcast bench prefix-cache`: what vLLM's automatic prefix caching saves on adcast's prompts.

A user's successive prompts share a byte-stable prefix (profile, then events oldest to newest; old
events are dropped in chunks, so most re-predictions only append). This replays that: it folds a
data directory's events per user with the stream tier's code, renders the prompt at each of the
user's engagements (when the pipeline would re-predict), and scores them round by round (round r
holds every chosen user's r-th prompt) on one vLLM engine with prefix caching, each round twice, side
by side: first with the cache as the previous round left it, then again after emptying it (what an
engine without the cache computes; emptying it also keeps the two from sharing this round's blocks).
Round 0 warms the engine and is not timed. `--shape` scores the same real token ids
with a bigger random-weight model that shares the checkpoint's vocabulary, where prefill compute,
which the cache saves, weighs more than on the tiny CPU model.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections import defaultdict
from typing import Any

from adcast.bench.random_model import SHAPES, build_random_model
from adcast.core.examples import iter_examples
from adcast.core.history import HistoryLimits
from adcast.core.prompt import render
from adcast.data.files import read_records
from adcast.errors import ConfigError
from adcast.model_meta import ModelMeta


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="an adcast model directory (its tokenizer renders the prompts)")
    p.add_argument("--data", required=True, help="data directory in the interchange format")
    p.add_argument("--users", type=int, default=256, help="users per round (default: 256)")
    p.add_argument("--rounds", type=int, default=8, help="successive predictions per user (default: 8)")
    p.add_argument(
        "--shape", choices=list(SHAPES), default=None, help="score with random weights of this shape instead"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--eager", action="store_true", help="skip vLLM's torch.compile at start (starts faster)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def user_prompt_sequences(data_dir: str, users: int, rounds: int, seed: int) -> list[list[str]]:
    """`users` users' prompts at `rounds` successive engagements (their latest ones)."""
    advertisers = {a["advertiser_id"] for a in read_records(data_dir, "advertisers")}
    profiles = {p["user_id"]: p["attributes"] for p in read_records(data_dir, "profiles")}
    by_user: dict[str, list[str]] = defaultdict(list)
    for ex in iter_examples(read_records(data_dir, "events"), profiles, advertisers, HistoryLimits()):
        by_user[ex.user_id].append(render(ex))
    eligible = sorted(u for u, prompts in by_user.items() if len(prompts) >= rounds)
    if not eligible:
        raise ConfigError(f"no user in {data_dir} has {rounds} engagements; lower --rounds")
    chosen = random.Random(seed).sample(eligible, min(users, len(eligible)))
    return [by_user[u][-rounds:] for u in chosen]


def _run(model_dir: str, rounds: list[list[list[int]]], device: str, compile: bool) -> dict[str, dict[str, Any]]:
    from adcast.engines.vllm import VllmEngine

    seconds = {True: 0.0, False: 0.0}
    cached = {True: 0, False: 0}
    engine = VllmEngine(model_dir, device=device, prefix_caching=True, compile=compile)
    try:
        engine.score_tokens(rounds[0], 10)  # warm-up, untimed; fills the cache with each user's first prompt
        for batch in rounds[1:]:
            for with_cache in (True, False):
                if not with_cache:
                    engine.reset_prefix_cache()
                before = engine.cached_prompt_tokens
                started = time.perf_counter()
                engine.score_tokens(batch, 10)
                seconds[with_cache] += time.perf_counter() - started
                cached[with_cache] += engine.cached_prompt_tokens - before
    finally:
        engine.close()
    predictions = sum(len(b) for b in rounds[1:])
    tokens = sum(len(x) for b in rounds[1:] for x in b)
    return {
        "with_cache" if on else "without_cache": {
            "prefix_caching": on,
            "seconds": round(seconds[on], 3),
            "predictions_per_s": round(predictions / seconds[on], 1),
            "cached_token_fraction": round(cached[on] / tokens, 4),
        }
        for on in (True, False)
    }


def bench_prefix_cache(args: argparse.Namespace, settings: Any = None) -> dict[str, Any]:
    from transformers import AutoTokenizer

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    sequences = user_prompt_sequences(args.data, args.users, args.rounds, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rounds = [list(tokenizer([seq[r] for seq in sequences], add_special_tokens=False)["input_ids"])
              for r in range(args.rounds)]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="adcast-bench-") as tmp:
        model_dir = args.model
        if args.shape:
            meta = ModelMeta.load(args.model)
            model_dir = tmp
            random_meta = build_random_model(
                args.shape, tmp, advertisers=len(meta.advertiser_ids), device=args.device, min_vocab=len(tokenizer)
            )
            # Keep the checkpoint's own advertiser map so `own <adv_…>` prompt tokens stay in range.
            ModelMeta(random_meta.model_version, meta.advertiser_ids, meta.tokens, meta.token_ids).save(tmp)
        measured = _run(model_dir, rounds, args.device, not args.eager)
    on, off = measured["with_cache"], measured["without_cache"]
    timed = rounds[1:]
    return {
        "engine": "vllm",
        "model": args.shape or ModelMeta.load(args.model).model_version,
        "device": args.device,
        "users": len(sequences),
        "timed_rounds": len(timed),
        "mean_prompt_tokens": round(sum(len(x) for b in timed for x in b) / sum(len(b) for b in timed), 1),
        "with_cache": on,
        "without_cache": off,
        "speedup": round(on["predictions_per_s"] / off["predictions_per_s"], 3),
    }


def format_report(r: dict[str, Any]) -> str:
    on, off = r["with_cache"], r["without_cache"]
    return "\n".join(
        [
            f"vLLM prefix caching, model {r['model']} on {r['device']}: {r['users']} users x {r['timed_rounds']} "
            f"successive predictions, {r['mean_prompt_tokens']} prompt tokens on average",
            f"  with cache     {on['predictions_per_s']:>10,.1f} predictions/s  "
            f"({on['cached_token_fraction']:.0%} of prompt tokens served from the cache)",
            f"  without cache  {off['predictions_per_s']:>10,.1f} predictions/s",
            f"  speed-up       {r['speedup']:.2f}x",
        ]
    )
