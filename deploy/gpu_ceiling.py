"""The GPU ceiling of one advertiser re-prediction: prefill only, no serving engine.

A re-prediction is one forward pass over a user's prompt, reading the last position's logits
over the advertiser rows only. This times exactly that with random weights of real model shapes
(Qwen2.5-0.5B and 1.5B), bf16, plain PyTorch with SDPA, and reports predictions/s and achieved
TFLOP/s: the engine-independent ceiling that `deploy/gpu-bench.sh` sets beside adcast's engine
in the same call. Needs torch and transformers only; CUDA.

Usage: OUT=folder python deploy/gpu_ceiling.py   (one JSON line per row, and OUT/gpu_ceiling.json)
"""

from __future__ import annotations

import json
import os

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM

SHAPES = {
    "0.5B": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2},
    "1.5B": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
             "num_attention_heads": 12, "num_key_value_heads": 2},
}  # fmt: skip
ADVERTISERS = 20_000
VOCAB = 151_936
PROMPT_TOKENS = (128, 256, 512)
BATCHES = (32, 128, 256)
TIMED = 5


def nonembedding_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)


def score(model: Qwen2ForCausalLM, rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    last = model.model(input_ids=ids).last_hidden_state[:, -1]
    return (last @ rows.T).float().log_softmax(-1).topk(100).indices


def main() -> None:
    out = os.environ.get("OUT", ".")
    torch.backends.cuda.matmul.allow_tf32 = True
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "transformers": transformers.__version__, "rows": []}  # fmt: skip
    for name, shape in SHAPES.items():
        config = Qwen2Config(vocab_size=VOCAB, max_position_embeddings=4096, tie_word_embeddings=True,
                             attn_implementation="sdpa", **shape)  # fmt: skip
        with torch.device("cuda"):
            model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
        params = nonembedding_params(model)
        rows = model.lm_head.weight[:ADVERTISERS]  # stands for the advertiser tokens' rows
        for tokens in PROMPT_TOKENS:
            for batch in BATCHES:
                ids = torch.randint(0, VOCAB, (batch, tokens), device="cuda")
                with torch.inference_mode():
                    for _ in range(2):  # warm-up
                        score(model, rows, ids)
                    torch.cuda.synchronize()
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    for _ in range(TIMED):
                        score(model, rows, ids)
                    end.record()
                    torch.cuda.synchronize()
                ms = start.elapsed_time(end) / TIMED
                row = {
                    "model": name,
                    "nonembed_params": params,
                    "prompt_tokens": tokens,
                    "batch": batch,
                    "ms_per_batch": round(ms, 2),
                    "predictions_per_s": round(batch / ms * 1000, 1),
                    "prefill_tokens_per_s": round(batch * tokens / ms * 1000),
                    "achieved_tflops": round(2 * params * batch * tokens / ms / 1e9, 1),  # matmuls, no attention
                }
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
        del model
        torch.cuda.empty_cache()
    with open(os.path.join(out, "gpu_ceiling.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
