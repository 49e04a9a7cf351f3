import json

import pytest

from adcast.checkpoint import META_FILE, ModelMeta

pytestmark = pytest.mark.integration
pytest.importorskip("torch")


def test_training_reduces_loss_and_writes_a_loadable_checkpoint(tiny_model, small_world):
    meta = ModelMeta.load(tiny_model)
    trained = json.loads((tiny_model / META_FILE).read_text())["trained"]
    assert trained["last_loss"] < 0.8 * trained["first_loss"]
    assert trained["examples"] > 100
    advs = [json.loads(line)["advertiser_id"] for line in (small_world / "advertisers.jsonl").read_text().splitlines()]
    assert list(meta.advertiser_ids) == advs
    assert len(set(meta.token_ids)) == len(advs)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert tok.convert_tokens_to_ids(list(meta.tokens)) == list(meta.token_ids)
    AutoModelForCausalLM.from_pretrained(tiny_model)
