"""Both engines meet the same scoring contract on the same real checkpoint, and agree."""

import math

import pytest
from engine_parity import assert_engines_agree, both_engines

from adcast.core.examples import iter_examples
from adcast.core.history import HistoryLimits
from adcast.core.prompt import render
from adcast.data.files import read_records
from adcast.model_meta import ModelMeta

# The engines fixture builds the vLLM engine in this process when vLLM is installed.
pytestmark = [pytest.mark.integration, pytest.mark.vllm]
pytest.importorskip("torch")
KINDS = ["torch", "vllm"]


@pytest.fixture(scope="module")
def prompts(small_world):
    advs = {a["advertiser_id"] for a in read_records(small_world, "advertisers")}
    profiles = {p["user_id"]: p["attributes"] for p in read_records(small_world, "profiles")}
    examples = list(iter_examples(read_records(small_world, "events"), profiles, advs, HistoryLimits()))
    return [render(ex) for ex in examples[::10]]


@pytest.fixture(scope="module")
def engines(tiny_model):
    yield from both_engines(tiny_model)


@pytest.mark.parametrize("kind", KINDS)
def test_contract(kind, engines, prompts, tiny_model):
    if kind not in engines:
        pytest.skip(f"{kind} is not installed in this environment")
    engine = engines[kind]
    known = set(ModelMeta.load(tiny_model).advertiser_ids)
    results = engine.score(prompts, 10)
    assert len(results) == len(prompts)
    for top in results:
        ids, probs = [a for a, _ in top], [p for _, p in top]
        assert len(ids) == 10 == len(set(ids)) and set(ids) <= known
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
    assert engine.score([], 10) == []
    everything = engine.score(prompts[:2], min(len(known), 60))
    for top in everything:
        assert math.isclose(sum(p for _, p in top), 1.0, rel_tol=2e-3)


def test_engines_agree(engines, prompts):
    if "vllm" not in engines:
        pytest.skip("vllm is not installed in this environment")
    a, b = engines["torch"].score(prompts, 10), engines["vllm"].score(prompts, 10)
    # The copy score reaches both (vLLM: as a logit bias): without it the answers move.
    plain = engines["vllm"].score_tokens(engines["vllm"].encode(prompts), 10)
    moved = sum(1 for x, y in zip(plain, b, strict=True) if [i for i, _ in x] != [i for i, _ in y])
    assert moved >= len(prompts) // 4
    assert_engines_agree(a, b)
