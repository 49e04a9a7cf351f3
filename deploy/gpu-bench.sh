#!/usr/bin/env bash
# The GPU check of the PyTorch engine, in one call of a few minutes on the GPU host:
#   1. adcast's torch engine on a Qwen2.5-0.5B-shaped random model, 256-token prompts, batch 256;
#   2. deploy/gpu_ceiling.py (prefill-only ceiling) on the same GPU, in the same call;
#   3. the ratio engine / ceiling at the same shape, prompt length and batch;
#   4. optionally (PARITY_MODEL + PARITY_PROMPTS), bf16-on-CUDA against fp32-on-CPU top-10 agreement.
# Needs python3 with torch, transformers, pydantic and pydantic-settings (adcast.config). On a GPU
# host without network or pydantic, unpack the pydantic wheels (`pip download --python-version
# 3.12 pydantic pydantic-settings`) into a folder that travels with the tree and name it in
# EXTRA_PYTHONPATH.
# Usage: [EXTRA_PYTHONPATH=dir] deploy/gpu-bench.sh   (results in $OUT or ./gpu-results)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${OUT:-gpu-results}")
CEILING=deploy/gpu_ceiling.py
mkdir -p "$OUT"
export PYTHONPATH=src${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
PY=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

bench() {  # shape, prompt tokens, batch, extra args
  $PY -m adcast.bench.predict --engine torch --random-model "$1" --device cuda \
      --prompt-tokens "$2" --batch "$3" --batches 20 --warmup 3 --json "${@:4}"
}
{
  bench qwen2.5-0.5b 256 256
  bench qwen2.5-0.5b 256 128
  bench qwen2.5-1.5b 256 256
} | tee "$OUT/engine.jsonl"

OUT=$OUT $PY "$CEILING" | tee "$OUT/ceiling.jsonl"

$PY - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
engine = [json.loads(l) for l in open(f"{out}/engine.jsonl") if l.startswith("{")]
ceiling = json.load(open(f"{out}/gpu_ceiling.json"))["rows"]
shape = {"qwen2.5-0.5b": "0.5B", "qwen2.5-1.5b": "1.5B"}
for e in engine:
    match = [c for c in ceiling if c["model"] == shape[e["model"]] and c["prompt_tokens"] == e["prompt_tokens"]
             and c["batch"] == e["batch"]]
    if match:
        c = match[0]
        print(json.dumps({"model": e["model"], "prompt_tokens": e["prompt_tokens"], "batch": e["batch"],
                          "engine_predictions_per_s": e["predictions_per_s"],
                          "ceiling_predictions_per_s": c["predictions_per_s"],
                          "ratio": round(e["predictions_per_s"] / c["predictions_per_s"], 3)}))
PY
if [[ -n "${PARITY_MODEL:-}" ]]; then
  $PY -m adcast.bench.dtype_parity --model "$PARITY_MODEL" --prompts "$PARITY_PROMPTS" | tee "$OUT/dtype_parity.json"
fi
# The compiled decoder, last: its compile time is the least predictable step.
timeout 150 bash -c "$(declare -f bench); PY=$PY; bench qwen2.5-0.5b 256 256 --compile" | tee "$OUT/engine_compiled.jsonl" || \
  echo "compiled run did not finish in 150 s"
