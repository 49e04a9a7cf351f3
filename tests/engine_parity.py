"""Both engines on one checkpoint, and the parity bar they must meet (the integration tests')."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def both_engines(model_dir: Path, vllm_compile: bool = True) -> Iterator[dict]:
    """{"torch": engine, "vllm": engine (when vLLM is installed)}, closed afterwards: a fixture body.
    `vllm_compile=False` skips vLLM's torch.compile at start (the same scores; a deep model starts
    minutes sooner on the CPU)."""
    from adcast.engines import create_engine

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    made = {"torch": create_engine("torch", str(model_dir))}
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        made["vllm"] = create_engine("vllm", str(model_dir), vllm_compile=vllm_compile)
    yield made
    for engine in made.values():
        engine.close()


def assert_engines_agree(a: list, b: list) -> None:
    """The same top-K set for at least 95 % of prompts, and every shared advertiser's probability
    within 0.01."""
    same_sets = sum(1 for x, y in zip(a, b, strict=True) if {i for i, _ in x} == {i for i, _ in y})
    assert same_sets >= 0.95 * len(a)
    for x, y in zip(a, b, strict=True):
        px, py = dict(x), dict(y)
        for adv in set(px) & set(py):
            assert abs(px[adv] - py[adv]) < 0.01
