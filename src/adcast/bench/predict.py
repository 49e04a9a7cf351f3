"""`adcast bench predict`: engine throughput on prompts of a fixed token length.

Times `score_tokens` (prefill, advertiser-only softmax, top-K) over batches of distinct random
prompts, so no prefix is shared between prompts and tokenization is excluded. Prints predictions/s,
prefill tokens/s, p50/p99 batch latency and achieved TFLOP/s (2 x non-embedding params x tokens,
the accounting deploy/gpu_ceiling.py uses).

Runs with nothing but torch and transformers installed (`python -m adcast.bench.predict`), which is
how the GPU check (deploy/gpu-bench.sh) calls it on machines without the rest of adcast's stack.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from typing import Any

from adcast.bench.random_model import SHAPES, build_random_model
from adcast.core.ranking import percentile
from adcast.errors import AdcastError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["torch", "vllm"], default="torch", help="scoring engine (default: torch)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="an adcast model directory")
    src.add_argument("--random-model", choices=list(SHAPES), metavar="SHAPE",
                     help=f"random weights of a named shape, built on the fly: {', '.join(SHAPES)}")  # fmt: skip
    p.add_argument("--advertisers", type=int, default=20_000, help="advertiser tokens of a random model (20000)")
    p.add_argument("--prompt-tokens", type=int, default=256, help="tokens per prompt (default: 256)")
    p.add_argument("--batch", type=int, default=256, help="prompts per engine call (default: 256)")
    p.add_argument("--batches", type=int, default=10, help="timed engine calls (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed engine calls first (default: 2)")
    p.add_argument("--k", type=int, default=10, help="advertisers returned per prompt (default: 10)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--compile", action="store_true", help="torch engine: torch.compile the decoder")
    p.add_argument("--eager", action="store_true", help="vllm engine: skip its torch.compile at start (starts faster)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return str(torch.cuda.get_device_name(0))
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _nonembedding_params(model_dir: str) -> int:
    """Parameters outside the embeddings, from the config (no weights loaded)."""
    from transformers import AutoConfig

    c: Any = AutoConfig.from_pretrained(model_dir)
    head = c.hidden_size // c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", c.num_attention_heads) * head
    attention = c.hidden_size * (c.hidden_size + 2 * kv) + c.hidden_size * c.hidden_size
    mlp = 3 * c.hidden_size * c.intermediate_size
    return int(c.num_hidden_layers * (attention + mlp))


def _engine(args: argparse.Namespace, model_dir: str) -> Any:
    if args.engine == "torch":
        from adcast.engines.torch import TorchEngine

        return TorchEngine(model_dir, device=args.device, compile=args.compile)
    from adcast.engines import create_engine

    return create_engine("vllm", model_dir, args.device, vllm_compile=not args.eager)


def bench_predict(args: argparse.Namespace, settings: Any = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="adcast-bench-") as tmp:
        model_dir = args.model
        if args.random_model:
            model_dir = tmp
            build_random_model(args.random_model, tmp, advertisers=args.advertisers, device=args.device)
        engine = _engine(args, model_dir)
        try:
            return _measure(args, engine, model_dir)
        finally:
            engine.close()


def _measure(args: argparse.Namespace, engine: Any, model_dir: str) -> dict[str, Any]:
    rng = random.Random(args.seed)
    text_vocab = min(engine.meta.token_ids)  # advertiser tokens sit above every text token
    calls = args.warmup + args.batches
    prompts = [[[rng.randrange(text_vocab) for _ in range(args.prompt_tokens)] for _ in range(args.batch)]
               for _ in range(calls)]  # fmt: skip
    latencies: list[float] = []
    for i, batch in enumerate(prompts):
        started = time.perf_counter()
        scored = engine.score_tokens(batch, args.k)
        if i >= args.warmup:
            latencies.append(time.perf_counter() - started)
        if len(scored) != len(batch):
            raise AdcastError(f"engine returned {len(scored)} results for {len(batch)} prompts")
    total = sum(latencies)
    predictions = args.batch * args.batches
    params = _nonembedding_params(model_dir)
    import torch

    return {
        "engine": args.engine,
        "model": args.random_model or engine.model_version,
        "nonembedding_params": params,
        "advertisers": len(engine.advertiser_ids),
        "device": args.device,
        "device_name": _device_name(args.device),
        "torch": torch.__version__,
        "compile": bool(args.compile) if args.engine == "torch" else not args.eager,
        "prompt_tokens": args.prompt_tokens,
        "batch": args.batch,
        "batches": args.batches,
        "predictions_per_s": round(predictions / total, 1),
        "prefill_tokens_per_s": round(predictions * args.prompt_tokens / total),
        "batch_latency_ms_p50": round(percentile(latencies, 50) * 1000, 2),
        "batch_latency_ms_p99": round(percentile(latencies, 99) * 1000, 2),
        "achieved_tflops": round(2 * params * predictions * args.prompt_tokens / total / 1e12, 2),
    }


def format_report(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"engine {r['engine']} on {r['device_name']}, model {r['model']} "
            f"({r['nonembedding_params'] / 1e6:.1f}M non-embedding params, {r['advertisers']} advertisers)",
            f"{r['batches']} batches of {r['batch']} prompts x {r['prompt_tokens']} tokens",
            f"  predictions/s     {r['predictions_per_s']:>12,.1f}",
            f"  prefill tokens/s  {r['prefill_tokens_per_s']:>12,}",
            f"  batch latency     p50 {r['batch_latency_ms_p50']:.1f} ms   p99 {r['batch_latency_ms_p99']:.1f} ms",
            f"  achieved          {r['achieved_tflops']:.2f} TFLOP/s",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="adcast bench predict", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        report = bench_predict(args)
    except AdcastError as exc:
        print(f"adcast: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
