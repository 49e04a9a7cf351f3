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


def test_training_is_deterministic_and_resume_equals_an_uninterrupted_run(small_world, tiny_model, tmp_path):
    """tiny_model is an uninterrupted run (TrainConfig(epochs=2, seed=0)); this run stops in the
    middle of the first epoch, then resumes from its checkpoint."""
    from safetensors.torch import load_file

    from adcast.train.trainer import TrainConfig, TrainingInterrupted, train

    out = tmp_path / "resumed"
    cfg = TrainConfig(epochs=2, seed=0, checkpoint_every=7, stop_after_steps=11)
    with pytest.raises(TrainingInterrupted):
        train(small_world, out, cfg, progress=False)
    assert (out / "checkpoint" / "state.pt").is_file()
    report = train(small_world, out, TrainConfig(epochs=2, seed=0), progress=False, resume=True)
    assert not (out / "checkpoint").exists()
    a, b = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max().item() < 1e-6, name
    trained = json.loads((tiny_model / META_FILE).read_text())["trained"]
    assert report.last_loss == pytest.approx(trained["last_loss"], abs=1e-6)
