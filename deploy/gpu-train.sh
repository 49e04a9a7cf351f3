#!/usr/bin/env bash
# The GPU check of the trainer, in one call of a few minutes on a GPU host:
#   1. a synthetic world (adcast generate) and its example shards (adcast examples);
#   2. a random-weight Qwen2.5-0.5B-shaped base with a word-level tokenizer of the world's prompts
#      (no download: the weights are random, the shapes and the cost per token are real);
#   3. adcast train on it, full fine-tuning in bf16, data-parallel over every GPU present
#      (torchrun, DDP over NCCL), one epoch;
#   4. examples/s and the achieved TFLOP/s (6 x parameters x tokens, end to end: the shard encoding
#      and the model's saving included) against the H200's ~790 dense bf16 TFLOP/s.
# Needs adcast installed with the infer-gpu extra (torch, transformers, duckdb, pyarrow).
# Usage: [USERS=600] [BATCH=32] deploy/gpu-train.sh   (results in $OUT or ./gpu-results)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${OUT:-gpu-results}")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
export PYTHONPATH=src${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
PY=${PYTHON:-python3}
GPUS=$(nvidia-smi -L | wc -l)
USERS=${USERS:-600}
BATCH=${BATCH:-32}
PEAK_TFLOPS=${PEAK_TFLOPS:-790}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -m adcast.cli generate --out "$WORK/world" --users "$USERS"
$PY -m adcast.cli examples --data "$WORK/world" --out "$WORK/shards" --quiet

$PY - "$WORK" <<'PY'
import sys
from pathlib import Path
from adcast.bench.random_model import build_random_model
from adcast.train.example_set import prompts
from adcast.train.shards import Manifest
from adcast.train.vocab import build_word_tokenizer

work = Path(sys.argv[1])
manifest = Manifest.load(work / "shards")
build_random_model("qwen2.5-0.5b", work / "base", advertisers=0, device="cuda")
build_word_tokenizer(prompts(work / "shards", manifest), []).save_pretrained(work / "base")
PY

torchrun --standalone --nproc-per-node "$GPUS" -m adcast.cli train --data "$WORK/shards" --base "$WORK/base" \
  --out "$WORK/model" --device cuda --epochs 1 --batch-size "$BATCH" --checkpoint-every 0 --quiet \
  | tee "$OUT/train.txt"

$PY - "$WORK" "$GPUS" "$PEAK_TFLOPS" <<'PY' | tee "$OUT/train.json"
import json, sys
from pathlib import Path
import numpy as np
import pyarrow.parquet as pq
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

work, gpus, peak = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
trained = json.loads((work / "model" / "adcast.json").read_text())["trained"]
tokenizer = AutoTokenizer.from_pretrained(work / "model")
tokens = 0
for shard in sorted((work / "shards").glob("shard-*.parquet")):
    texts = pq.read_table(shard, columns=["prompt"]).column("prompt").to_pylist()
    tokens += int(np.sum([min(len(x), 512) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]))
params = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(work / "model")).num_parameters()
seconds = trained["seconds"]
tflops = 6 * params * tokens * trained["epochs"] / seconds / 1e12
print(json.dumps({
    "gpus": gpus, "parameters": params, "examples": trained["examples"], "tokens": tokens,
    "global_batch": trained["global_batch"], "seconds": seconds,
    "examples_per_s": round(trained["examples"] * trained["epochs"] / seconds, 1),
    "tflops": round(tflops, 1), "share_of_peak": round(tflops / (peak * gpus), 4),
}))
PY
