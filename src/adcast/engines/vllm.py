"""vLLM engine: one prefill per prompt, the next-token distribution over advertiser tokens only.

`max_tokens=1`, `allowed_token_ids` = the advertiser tokens, `logprobs=K`, and
`logprobs_mode="processed_logprobs"`: the logprobs are taken after the allowed-token mask, so they
are a softmax over advertisers only (the default mode returns logprobs over the whole vocabulary).
Prompts are tokenized here, by the checkpoint's tokenizer, exactly as the torch engine does, and
passed as token ids. Automatic prefix caching is on: a user's successive prompts share a prefix.
On a GPU, building an `LLM` starts an engine process: construct this engine under
`if __name__ == "__main__"` (the `adcast` entry point does). On the CPU it runs in this process
(see `_in_process`), and then changes the whole process: vLLM's CPU worker binds OpenMP threads,
cuts torch to one thread and makes `torch.set_num_threads` refuse. No adcast command trains or
scores with torch in a process after building this engine; the tests that build it run in a
pytest process of their own (marker `vllm`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from adcast.engines.base import PromptScoring, Scored
from adcast.errors import ModelError
from adcast.model_meta import ModelMeta, has_tokenizer

# vLLM logs to stdout by default, which would corrupt `--json` output and piped results.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


CPU_KV_CACHE_GIB = 2.0


def _kv_cache_bytes(device: str, gib: float) -> int | None:
    """The KV cache to reserve. vLLM's CPU default reserves 92 % of the machine's memory and
    refuses to start when other processes hold more than the rest (the stream tier, the broker):
    on the CPU adcast asks for CPU_KV_CACHE_GIB unless told otherwise (here or by vLLM's own
    VLLM_CPU_KVCACHE_SPACE). On a GPU, None leaves vLLM's share of GPU memory."""
    if gib > 0:
        return int(gib * 2**30)
    if device == "cpu" and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return int(CPU_KV_CACHE_GIB * 2**30)
    return None


def _in_process(device: str) -> bool:
    """Whether vLLM runs its engine in this process, with the model in this process too.

    In its own processes, vLLM's engine and model worker wait for work by spinning for a second
    after every step (shared-memory queues that poll with sched_yield). A GPU server has cores to
    spare for that; on the CPU those cores are the ones the model runs on, beside the stream tier
    and the broker. Measured on the 2-core VM, one micro-batch every 250 ms: 1.24 cores busy in
    vLLM's processes, 0.29 in-process, for the same scoring. On the CPU adcast therefore asks for
    the in-process engine unless VLLM_ENABLE_V1_MULTIPROCESSING says otherwise."""
    if device != "cpu":
        return False
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


class VllmEngine(PromptScoring):
    def __init__(
        self,
        model_dir: str,
        device: str = "cpu",
        max_k: int = 64,
        dtype: str | None = None,
        prefix_caching: bool = True,
        max_model_len: int | None = None,
        block_size: int | None = None,
        compile: bool = True,
        kv_cache_gib: float = 0.0,
    ) -> None:
        from transformers import AutoTokenizer
        from vllm import LLM

        self.meta = ModelMeta.load(model_dir)
        self.model_version = self.meta.model_version
        self.advertiser_ids = self.meta.advertiser_ids
        self._by_token = dict(zip(self.meta.token_ids, self.meta.advertiser_ids, strict=True))
        # Random-weight benchmark models carry no tokenizer; they are scored through score_tokens.
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir) if has_tokenizer(model_dir) else None
        self.max_k = min(max_k, len(self.advertiser_ids))
        in_process = _in_process(device)
        try:
            self.llm = LLM(
                model=model_dir,
                dtype=dtype or ("bfloat16" if device == "cuda" else "float32"),
                enable_prefix_caching=prefix_caching,
                max_logprobs=self.max_k,
                logprobs_mode="processed_logprobs",
                max_model_len=max_model_len,
                # The cache is reused in whole blocks: vLLM's CPU default of 128 tokens is most of an adcast
                # prompt, so almost nothing would be reused there; 32 is the smallest the CPU kernels like.
                block_size=block_size or (None if device == "cuda" else 32),
                # vLLM compiles the model with torch.compile at start: faster scoring on a GPU, but on the
                # CPU it doubles start-up (about 30 s more here) for little gain on small models.
                enforce_eager=not compile,
                kv_cache_memory_bytes=_kv_cache_bytes(device, kv_cache_gib),
                skip_tokenizer_init=True,  # prompts arrive as token ids and answers are read as token ids
                distributed_executor_backend="uni" if in_process else None,
                seed=0,
            )
        except Exception as exc:  # vLLM raises many types at start-up; all mean "cannot serve this model"
            raise ModelError(f"vLLM could not load {model_dir}: {type(exc).__name__}: {exc}") from exc
        self.max_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.cached_prompt_tokens = 0  # prompt tokens served from the prefix cache, since start

    def score_tokens(
        self, token_ids: list[list[int]], k: int, biases: Sequence[Mapping[int, float]] | None = None
    ) -> list[Scored]:
        from vllm import SamplingParams, TokensPrompt

        if not token_ids:
            return []
        k = min(k, self.max_k)
        allowed = list(self.meta.token_ids)

        def params(bias: Mapping[int, float] | None) -> Any:
            # The copy score's bonus as a logit bias: vLLM adds it before the processed logprobs.
            logit_bias = {allowed[i]: v for i, v in bias.items()} if bias else None
            return SamplingParams(
                max_tokens=1,
                temperature=1.0,
                allowed_token_ids=allowed,
                logit_bias=logit_bias,
                logprobs=k,
                detokenize=False,
            )

        per_prompt = [params(b) for b in biases] if biases else params(None)
        # Keep the newest part of over-long prompts, as the torch engine does (one slot for the answer).
        inputs: list[Any] = [TokensPrompt(prompt_token_ids=x[-(self.max_len - 1) :]) for x in token_ids]
        outputs = self.llm.generate(inputs, per_prompt, use_tqdm=False)
        results: list[Scored] = []
        for out in outputs:
            self.cached_prompt_tokens += out.num_cached_tokens or 0
            logprobs = out.outputs[0].logprobs[0]  # token -> Logprob, top-k (+ the sampled one)
            ranked = sorted(logprobs.items(), key=lambda item: -item[1].logprob)[:k]
            results.append([(self._by_token[token], math.exp(lp.logprob)) for token, lp in ranked])
        return results

    def reset_prefix_cache(self) -> None:
        """Empty the prefix cache (benchmarks: what the next prompts cost without it)."""
        if not self.llm.reset_prefix_cache():
            raise ModelError("vLLM refused to empty its prefix cache (requests still running)")

    def close(self) -> None:
        del self.llm
