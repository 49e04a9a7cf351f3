import json
import math

import pytest

from adcast.model_meta import META_FILE, ModelMeta

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


def test_training_is_deterministic_and_resume_equals_an_uninterrupted_run(small_world, tmp_path):
    """An uninterrupted run and a run that stops in the middle of the first epoch and resumes from
    its checkpoint, trained back to back in this test: the same process, thread layout and kernels
    for both, so the weights must be identical to the bit (a session fixture trained earlier could
    have run under another thread layout, which changes float summation order)."""
    import torch
    from safetensors.torch import load_file

    from adcast.train.trainer import TrainConfig, TrainingInterrupted, train

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    reference = train(small_world, whole, TrainConfig(epochs=2, seed=0, relabel=0.5), progress=False)
    cfg = TrainConfig(epochs=2, seed=0, relabel=0.5, checkpoint_every=7, stop_after_steps=11)
    with pytest.raises(TrainingInterrupted):
        train(small_world, resumed, cfg, progress=False)
    assert (resumed / "checkpoint" / "state.pt").is_file()
    report = train(small_world, resumed, TrainConfig(epochs=2, seed=0, relabel=0.5), progress=False, resume=True)
    assert not (resumed / "checkpoint").exists()
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), (name, (a[name] - b[name]).abs().max().item())
    assert report.last_loss == reference.last_loss


def test_derived_epochs_end_a_partial_last_pass_on_its_share_of_steps(small_world, tmp_path, monkeypatch):
    """Without --epochs, a data set larger than a run's worth of examples gets a fractional number
    of passes (auto_epochs); the run stops within the last pass, after that share of its steps."""
    import adcast.train.trainer as trainer

    monkeypatch.setattr(trainer, "auto_epochs", lambda examples: 1.5)
    report = trainer.train(small_world, tmp_path / "m", trainer.TrainConfig(relabel=0.0), progress=False)
    trained = json.loads((tmp_path / "m" / META_FILE).read_text())["trained"]
    steps_per_epoch = math.ceil(trained["examples"] / trainer.TrainConfig().batch_size)
    assert trained["epochs"] == 1.5
    assert trained["steps"] == math.ceil(1.5 * steps_per_epoch)
    assert report.epochs == pytest.approx(1.5, abs=1 / steps_per_epoch)


def test_fine_tunes_a_local_pretrained_checkpoint_with_advertiser_tokens_added(small_world, tmp_path):
    """`--base`: a small 'pretrained' checkpoint this test saves itself (its own vocabulary, no
    advertiser tokens) gets the advertiser tokens added, initialised from their names, and trains."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from adcast.data.files import read_records
    from adcast.train.models import init_advertiser_rows
    from adcast.train.trainer import TrainConfig, train
    from adcast.train.vocab import build_word_tokenizer

    names = [a["name"].lower() for a in read_records(small_world, "advertisers")]
    base_tok = build_word_tokenizer(["profile next click view search ; " + " ".join(names)] * 2, [])
    base_dir = tmp_path / "base"
    torch.manual_seed(1)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(base_tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=4,
            tie_word_embeddings=True,
            max_position_embeddings=256,
        )
    ).save_pretrained(base_dir)
    base_tok.save_pretrained(base_dir)

    report = train(small_world, tmp_path / "tuned", TrainConfig(epochs=1, seed=0), base=str(base_dir), progress=False)
    meta = ModelMeta.load(tmp_path / "tuned")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tuned")
    assert len(tok) == len(base_tok) + len(meta.advertiser_ids)
    assert min(meta.token_ids) >= len(base_tok)  # added after the base vocabulary
    assert report.last_loss < report.first_loss

    # the initialisation: an advertiser row starts at the mean of its name's token rows; two
    # advertisers of the same name start near it but apart (or a history could not tell them apart)
    model = LlamaForCausalLM.from_pretrained(base_dir)
    tok = AutoTokenizer.from_pretrained(base_dir)
    tok.add_tokens(["<adv_x>", "<adv_y>", "<adv_z>"])
    model.resize_token_embeddings(len(tok))
    *pair, alone = tok.convert_tokens_to_ids(["<adv_x>", "<adv_y>", "<adv_z>"])
    assert names[1] != names[0]
    torch.manual_seed(0)
    init_advertiser_rows(model, tok, [*pair, alone], [names[0], names[0], names[1]])
    emb = model.get_input_embeddings().weight.detach()
    assert torch.allclose(emb[alone], emb[tok.convert_tokens_to_ids(names[1])])
    words = emb[: len(base_tok)]
    for adv in pair:
        nearest = torch.nn.functional.cosine_similarity(words, emb[adv].unsqueeze(0)).argmax().item()
        assert nearest == tok.convert_tokens_to_ids(names[0])
    assert not torch.allclose(emb[pair[0]], emb[pair[1]])


def test_gradient_accumulation_trains_with_the_global_batch(small_world, tmp_path):
    """Four forward passes of 16 per optimizer step of 64: the loss falls as with whole batches, and
    the run records the global batch it used."""
    from adcast.train.trainer import TrainConfig, train

    report = train(small_world, tmp_path / "m", TrainConfig(epochs=2, batch_size=16, global_batch=64), progress=False)
    assert report.last_loss < 0.8 * report.first_loss
    assert json.loads((tmp_path / "m" / META_FILE).read_text())["trained"]["global_batch"] == 64


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 16, "global_batch": 40}, "must be a multiple of the batch size"),
        ({"lora_rank": 8}, "give it one with --base"),  # LoRA adapts a pretrained model
        ({"max_minutes": 5, "resume": True}, "cannot resume"),  # a time box follows the clock
    ],
)
def test_training_settings_that_cannot_work_say_why(small_world, tmp_path, settings, message):
    from adcast.errors import ConfigError
    from adcast.train.trainer import TrainConfig, train

    resume = settings.pop("resume", False)
    with pytest.raises(ConfigError, match=message):
        train(small_world, tmp_path / "m", TrainConfig(**settings), progress=False, resume=resume)


def test_a_time_box_ends_the_run_early_and_saves_the_model_with_its_partial_epoch_scored(small_world, tmp_path):
    """Ten thousand epochs asked for, a box of about a second: the run stops after a fraction of
    them, scores the weights it stopped with on the validation slice, and saves a loadable model."""
    from transformers import AutoModelForCausalLM

    from adcast.train.trainer import TrainConfig, train

    cfg = TrainConfig(epochs=10_000, validation=0.2, max_minutes=0.02)
    report = train(small_world, tmp_path / "m", cfg, progress=False)
    trained = json.loads((tmp_path / "m" / META_FILE).read_text())["trained"]
    assert 0 < report.epochs < cfg.epochs
    assert trained["max_minutes"] == cfg.max_minutes and trained["steps"] > 0
    assert len(trained["validation_losses"]) == math.ceil(report.epochs) and trained["best_epoch"] >= 1
    assert not (tmp_path / "m" / "checkpoint").exists()
    AutoModelForCausalLM.from_pretrained(tmp_path / "m")


def test_a_validation_slice_keeps_the_best_epoch_and_stops_when_it_stops_improving(small_world, tmp_path):
    """A fifth of the users held out: every epoch is scored on them, the saved model is the best
    epoch's, and one epoch without improvement ends the run."""
    from adcast.train.trainer import TrainConfig, train

    cfg = TrainConfig(epochs=12, lr=1e-2, validation=0.2, patience=1)
    report = train(small_world, tmp_path / "m", cfg, progress=False)
    trained = json.loads((tmp_path / "m" / META_FILE).read_text())["trained"]
    losses = trained["validation_losses"]
    assert 0 < trained["validation_examples"] < report.examples
    best = min(range(len(losses)), key=losses.__getitem__)
    assert trained["best_epoch"] == best + 1
    # It stopped one epoch after the best one, unless the best was the last allowed.
    assert len(losses) == min(cfg.epochs, best + 1 + cfg.patience)
    assert len(losses) < cfg.epochs, "a learning rate this high should overfit the small world"
    assert not (tmp_path / "m" / "checkpoint").exists()
