"""The PyTorch engine on a real (tiny, trained) model."""

import math

import pytest

from adcast.core.copy import COPY_SLOTS
from adcast.core.examples import iter_examples
from adcast.core.history import HistoryLimits
from adcast.core.prompt import render
from adcast.data.files import read_records
from adcast.model_meta import ModelMeta

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def engine(tiny_model):
    from adcast.engines import create_engine

    return create_engine("torch", str(tiny_model))


@pytest.fixture(scope="module")
def prompts(small_world):
    advs = {a["advertiser_id"] for a in read_records(small_world, "advertisers")}
    profiles = {p["user_id"]: p["attributes"] for p in read_records(small_world, "profiles")}
    examples = list(iter_examples(read_records(small_world, "events"), profiles, advs, HistoryLimits()))
    return [render(ex) for ex in examples[::25]]


def test_top_k_is_sorted_known_and_a_distribution_over_advertisers(engine, prompts, tiny_model):
    known = set(ModelMeta.load(tiny_model).advertiser_ids)
    for top in engine.score(prompts, 10):
        ids = [a for a, _ in top]
        probs = [p for _, p in top]
        assert len(ids) == 10 == len(set(ids)) and set(ids) <= known
        assert probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1 + 1e-6
    # over every advertiser, probabilities sum to one
    for top in engine.score(prompts[:3], len(known)):
        assert math.isclose(sum(p for _, p in top), 1.0, rel_tol=1e-4)


def test_scores_do_not_depend_on_batch_composition(engine, prompts):
    together = engine.score(prompts, 5)
    alone = [engine.score([p], 5)[0] for p in prompts[:8]]
    for a, b in zip(alone, together[:8], strict=True):
        assert [x for x, _ in a] == [x for x, _ in b]
        assert all(abs(pa - pb) < 1e-4 for (_, pa), (_, pb) in zip(a, b, strict=True))


def test_advertiser_rows_only_matches_the_full_vocabulary_softmax_restricted(engine, prompts):
    """The fast path (hidden @ advertiser rows) equals the model's own logits restricted to them,
    plus the copy score's bonus for the advertisers the prompt names."""
    meta = engine.meta
    ids = engine.tokenizer(prompts[:1], add_special_tokens=False)["input_ids"][0]
    with torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0, -1]
    restricted = logits[list(meta.token_ids)]
    bonus = meta.copy_bias(prompts[0])
    assert bonus and len(meta.copy_weights) == COPY_SLOTS and any(w != 0 for w in meta.copy_weights)
    for i, b in bonus.items():
        restricted[i] += b
    restricted = torch.softmax(restricted, dim=-1)
    expected = sorted(zip(meta.advertiser_ids, restricted.tolist(), strict=True), key=lambda x: -x[1])[:5]
    got = engine.score(prompts[:1], 5)[0]
    assert [a for a, _ in got] == [a for a, _ in expected]
    assert all(abs(p - q) < 1e-5 for (_, p), (_, q) in zip(got, expected, strict=True))


def test_missing_model_is_a_clear_error(tmp_path):
    from adcast.engines import create_engine
    from adcast.errors import ModelError

    with pytest.raises(ModelError, match="adcast train"):
        create_engine("torch", str(tmp_path))
