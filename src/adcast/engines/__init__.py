"""Scoring engines behind one interface (adcast.engines.base.ScoringEngine), chosen by `create_engine`."""

from __future__ import annotations

from adcast.config import InferSettings
from adcast.engines.base import ScoringEngine
from adcast.errors import ConfigError, DependencyMissing


def create_engine(
    kind: str,
    model_dir: str,
    device: str = "cpu",
    cpu_threads: int = 0,
    vllm_compile: bool = True,
    vllm_kv_cache_gib: float = 0.0,
) -> ScoringEngine:
    if kind == "torch":
        try:
            import torch
            import transformers  # noqa: F401
        except ImportError as exc:
            raise DependencyMissing(exc.name or "torch", "infer-cpu") from exc
        from adcast.engines.torch import TorchEngine

        if cpu_threads > 0:
            torch.set_num_threads(cpu_threads)

        return TorchEngine(model_dir, device=device)
    if kind == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise DependencyMissing("vllm", "infer-gpu" if device == "cuda" else "infer-cpu") from exc
        from adcast.engines.vllm import VllmEngine

        return VllmEngine(model_dir, device=device, compile=vllm_compile, kv_cache_gib=vllm_kv_cache_gib)
    raise ConfigError(f"unknown engine {kind!r}; choose one of: torch, vllm")


def engine_from_settings(i: InferSettings) -> ScoringEngine:
    """The engine the `infer` settings describe (the inference worker's and backfill's)."""
    return create_engine(i.engine, i.model_dir, i.device, i.cpu_threads, i.vllm_compile, i.vllm_kv_cache_gib)


__all__ = ["ScoringEngine", "create_engine", "engine_from_settings"]
