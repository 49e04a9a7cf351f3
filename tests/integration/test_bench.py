"""The engine benchmarks run end to end on real engines and report self-consistent figures."""

import json
import os

import pytest

from adcast.cli import main

pytestmark = pytest.mark.integration
pytest.importorskip("torch")


def _json_output(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_random_model_checkpoint_meets_the_contract_through_token_ids(tmp_path):
    from adcast.bench.random_model import build_random_model
    from adcast.engines import create_engine
    from adcast.errors import ModelError

    meta = build_random_model("tiny", tmp_path, advertisers=50, seed=3)
    engine = create_engine("torch", str(tmp_path))
    text_vocab = min(meta.token_ids)
    prompts = [[(7 * i + j) % text_vocab for j in range(5 + i)] for i in range(6)]
    results = engine.score_tokens(prompts, 50)
    assert len(results) == 6
    for top in results:
        assert {a for a, _ in top} == set(meta.advertiser_ids)
        assert abs(sum(p for _, p in top) - 1.0) < 1e-4
    with pytest.raises(ModelError, match="no tokenizer"):
        engine.score(["click a0001"], 5)


@pytest.mark.bench
@pytest.mark.parametrize("engine", ["torch", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_bench_predict_reports_consistent_figures(engine, capsys):
    if engine == "vllm":
        pytest.importorskip("vllm")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    argv = ["bench", "predict", "--engine", engine, "--random-model", "tiny", "--advertisers", "100"]
    argv += ["--prompt-tokens", "24", "--batch", "8", "--batches", "3", "--warmup", "1", "--json"]
    if engine == "vllm":
        argv.append("--eager")  # compiled vLLM is covered by the engine contract test; this one checks figures
    r = _json_output(capsys, argv)
    assert r["engine"] == engine and r["advertisers"] == 100 and r["batch"] == 8
    assert r["predictions_per_s"] > 0
    # prefill tokens/s is predictions/s times the prompt length (both rounded)
    assert abs(r["prefill_tokens_per_s"] - 24 * r["predictions_per_s"]) <= 24
    assert 0 < r["batch_latency_ms_p50"] <= r["batch_latency_ms_p99"]
    assert r["batch_latency_ms_p50"] / 1000 <= 8 / r["predictions_per_s"] * 3  # a batch takes about batch/rate


@pytest.mark.bench
@pytest.mark.vllm
def test_prefix_cache_is_used_by_successive_prompts_of_a_user(small_world, tiny_model, capsys):
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    argv = ["bench", "prefix-cache", "--model", str(tiny_model), "--data", str(small_world)]
    # --eager: vLLM's compile step would double each of the two engine starts and change no figure checked here.
    r = _json_output(capsys, [*argv, "--users", "24", "--rounds", "3", "--eager", "--json"])
    assert r["users"] == 24 and r["timed_rounds"] == 2
    # Successive prompts append events to a stable prefix: most of each prompt comes from the cache.
    assert r["with_cache"]["cached_token_fraction"] > 0.3
    assert r["without_cache"]["cached_token_fraction"] == 0
