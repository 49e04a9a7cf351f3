"""`python -m adcast.bench.dtype_parity`: the torch engine in bf16 on CUDA against fp32 on the CPU.

Scores the same prompts (a JSON-lines file of prompt strings) with one checkpoint both ways and
reports how often the top-10 sets agree and the largest probability difference: the documented
cost of serving in bf16. Needs only torch and transformers, like adcast.bench.predict.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def compare(model_dir: str, prompts: list[str], k: int = 10, device: str = "cuda") -> dict[str, Any]:
    from adcast.engines.torch import TorchEngine

    reference = TorchEngine(model_dir, device="cpu").score(prompts, k)
    served = TorchEngine(model_dir, device=device).score(prompts, k)
    same_sets = sum({a for a, _ in r} == {a for a, _ in s} for r, s in zip(reference, served, strict=True))
    diffs = [abs(p - dict(s).get(a, 0.0)) for r, s in zip(reference, served, strict=True) for a, p in r]
    same_top1 = sum(r[0][0] == s[0][0] for r, s in zip(reference, served, strict=True))
    return {
        "prompts": len(prompts),
        "k": k,
        "same_topk_set_fraction": round(same_sets / len(prompts), 4),
        "same_top1_fraction": round(same_top1 / len(prompts), 4),
        "max_probability_diff": round(max(diffs), 5),
        "mean_probability_diff": round(sum(diffs) / len(diffs), 6),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adcast.bench.dtype_parity", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an adcast model directory (with its tokenizer)")
    p.add_argument("--prompts", required=True, help="JSON lines, one prompt string per line")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--device", default="cuda", help="the device to compare with fp32 on the CPU (default: cuda)")
    args = p.parse_args(argv)
    with open(args.prompts) as f:
        prompts = [json.loads(line) for line in f if line.strip()]
    print(json.dumps(compare(args.model, prompts, args.k, args.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
