"""TrainConfig refuses settings that cannot work, saying which option and why; `adcast train` takes
its defaults from it. No torch needed: both tiers build this command line."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from adcast.errors import ConfigError
from adcast.train.cli import add_model_commands, train_config
from adcast.train.config import EXAMPLES_PER_RUN, MAX_AUTO_EPOCHS, TrainConfig, auto_epochs


def test_the_defaults_and_sensible_settings_are_accepted():
    TrainConfig()
    TrainConfig(epochs=1, batch_size=16, global_batch=64, validation=0.2, patience=2, relabel=0.0)
    TrainConfig(lora_rank=8, lora_alpha=16.0, lora_targets=("q_proj",), return_smoothing=0.0, new_smoothing=1.0)
    TrainConfig(max_minutes=0.5, cutoff_fraction=1.0, checkpoint_every=0, weight_decay=0.0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": 0}, "--epochs must be 1 or more; got 0"),
        ({"batch_size": 0}, "--batch-size must be 1 or more"),
        ({"heads": -1}, "--heads must be 1 or more"),
        ({"checkpoint_every": -5}, "--checkpoint-every is a count, 0"),
        ({"max_minutes": -1.0}, r"--max-minutes is a duration, 0 \(no limit\) or more; got -1.0"),
        ({"lr": 0.0}, "--lr must be above 0"),
        ({"weight_decay": -0.1}, "--weight-decay 0 or more"),
        ({"return_smoothing": 1.5}, "--return-smoothing is a share of the target, between 0 and 1; got 1.5"),
        ({"new_smoothing": -0.1}, "--new-smoothing is a share of the target"),
        ({"relabel": -1.0}, "--relabel is a number of copies per example, 0 or more"),
        ({"cutoff_fraction": 0.0}, "--cutoff-fraction is a time quantile"),
        ({"cutoff_fraction": 1.2}, "--cutoff-fraction is a time quantile"),
        ({"validation": 1.0}, "--validation is a share of the users"),
        ({"validation": -0.1}, "--validation is a share of the users"),
        ({"patience": 2}, "give --validation too"),
        ({"batch_size": 16, "global_batch": 40}, "--global-batch 40 must be a multiple of the batch size 16"),
        ({"batch_size": 16, "global_batch": 8}, "must be a multiple of the batch size"),
        ({"lora_rank": -2}, "--lora-rank must be 0"),
        ({"lora_alpha": 32.0}, "give --lora-rank too"),
        ({"lora_rank": 8, "lora_alpha": 0.0}, "--lora-alpha must be above 0"),
        ({"lora_targets": ()}, "--lora-targets names no module"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_naming_the_option(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def _train_parser() -> argparse.ArgumentParser:
    parsers: dict[str, argparse.ArgumentParser] = {}

    def add(name, fn, help):
        parsers[name] = argparse.ArgumentParser(prog=f"adcast {name}", description=help)
        return parsers[name]

    add_model_commands(add)
    return parsers["train"]


def test_every_train_option_defaults_to_the_train_config_field_it_sets():
    args = _train_parser().parse_args(["--data", "d", "--out", "o"])
    given = vars(args)
    defaults = TrainConfig()
    options = [f.name for f in fields(TrainConfig) if f.name in given]
    # Every field a user tunes has an option; the rest are for tests and the model's shape.
    assert set(options) == {f.name for f in fields(TrainConfig)} - {"heads", "max_positions", "stop_after_steps"}
    for name in options:
        assert given[name] == getattr(defaults, name), name
    assert train_config(args) == defaults


def test_train_options_set_their_fields_and_help_shows_the_defaults():
    parser = _train_parser()
    argv = ["--data", "d", "--out", "o", "--epochs", "3", "--lr", "2e-4", "--global-batch", "128"]
    argv += ["--lora-rank", "4", "--lora-targets", "q_proj, v_proj", "--gradient-checkpointing"]
    cfg = train_config(parser.parse_args(argv))
    assert (cfg.epochs, cfg.lr, cfg.global_batch, cfg.lora_rank) == (3, 2e-4, 128, 4)
    assert cfg.lora_targets == ("q_proj", "v_proj") and cfg.gradient_checkpointing
    with pytest.raises(ConfigError, match="--lora-targets names no module"):
        train_config(parser.parse_args(["--data", "d", "--out", "o", "--lora-targets", " , "]))
    text = "".join(parser.format_help().split())  # argparse wraps lines anywhere, even inside a default
    defaults = TrainConfig()
    for shown in (defaults.lr, defaults.weight_decay, defaults.batch_size, defaults.checkpoint_every):
        assert f"default:{shown})" in text
    assert f"about{EXAMPLES_PER_RUN:,}examples,1to{MAX_AUTO_EPOCHS}passes)" in text  # epochs: from the data
    assert f"default:{','.join(defaults.lora_targets)})" in text


@pytest.mark.parametrize(
    ("examples", "epochs"),
    [(1, MAX_AUTO_EPOCHS), (EXAMPLES_PER_RUN // 5, 5), (EXAMPLES_PER_RUN // 2, 2), (EXAMPLES_PER_RUN, 1), (10**9, 1)],
)
def test_derived_epochs_see_about_the_same_examples_on_any_data_size(examples, epochs):
    assert auto_epochs(examples) == epochs
    between = auto_epochs(3 * EXAMPLES_PER_RUN // 4)  # a partial last pass
    assert between == pytest.approx(4 / 3) and between * (3 * EXAMPLES_PER_RUN // 4) == pytest.approx(EXAMPLES_PER_RUN)
