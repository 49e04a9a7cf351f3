"""A training run's settings, checked when they are made. No torch here: the command line reads the
defaults of `adcast train` from TrainConfig in either tier's environment."""

from __future__ import annotations

from dataclasses import dataclass

from adcast.core.examples import DEFAULT_CUTOFF_FRACTION, DEFAULT_SERVING_DELAY_MS
from adcast.errors import ConfigError
from adcast.train.lora import DEFAULT_TARGETS


@dataclass(frozen=True)
class TrainConfig:
    """Settings of `adcast train`; a value that cannot work raises ConfigError, naming the option."""

    # Passes over the training examples. None: derived from the data (auto_epochs), so that a run
    # sees about as many examples on a large data set as on a small one.
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    # Shares of the target mass spread over the plausible alternatives (see soft_targets): on a
    # return, the user's own advertisers; on a new advertiser, the ads of its category the prompt
    # shows when it is one of them, else the advertisers of its category.
    return_smoothing: float = 0.3
    new_smoothing: float = 0.3
    # Relabelled copies (see Relabeller) per example whose target is in the history, per epoch, on
    # top of the example itself: they teach copying from the history. None: derived from the data
    # (auto_relabel), as a catalog needs them only where most advertisers are seen in few examples.
    relabel: float | None = None
    seed: int = 0
    cutoff_fraction: float = DEFAULT_CUTOFF_FRACTION
    # Seconds: events this recent before a target are left out of its prompt, as the pipeline
    # cannot serve a prediction fresher than that (adcast.core.examples.iter_examples).
    serving_delay: float = DEFAULT_SERVING_DELAY_MS / 1000
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    max_positions: int = 512
    device: str = "cpu"
    checkpoint_every: int = 200  # steps between resumable checkpoints (0: none)
    stop_after_steps: int = 0  # stop early with a resumable checkpoint (tests); 0: never
    # A time box: the run ends after this many minutes with its schedule decayed (see
    # adcast.train.schedule) and saves its model; 0: none.
    max_minutes: float = 0.0
    # Examples per optimizer step: batch_size examples per forward pass, gradients accumulated
    # over global_batch / batch_size of them. None: batch_size.
    global_batch: int | None = None
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory
    # LoRA on a pretrained base (0: full fine-tuning); see adcast.train.lora.
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS
    # A share of the users held out and scored after each epoch; the best epoch is saved, and
    # `patience` epochs without improvement stop the run (0: never). See adcast.train.validation.
    validation: float = 0.0
    patience: int = 0

    def __post_init__(self) -> None:
        _check_sizes(self)
        _check_shares(self)
        _check_batches(self)
        _check_lora(self)


# auto_epochs: passes over small data sets up to MAX_AUTO_EPOCHS, fewer over large ones, so that a
# run sees about EXAMPLES_PER_RUN examples: data sets up to 17,000 examples (the default world has
# 16,264) get 5 passes. Measured (recall@10): Complete Journey's purchases (57,485 examples) score
# after 1.5 passes as after 5, in a third of the time.
EXAMPLES_PER_RUN = 85_000
MAX_AUTO_EPOCHS = 5


def auto_epochs(examples: int) -> float:
    """Passes over `examples` training examples when none are asked for: EXAMPLES_PER_RUN's worth,
    at least 1 and at most MAX_AUTO_EPOCHS; the last pass may be partial."""
    return max(1.0, min(float(MAX_AUTO_EPOCHS), EXAMPLES_PER_RUN / max(1, examples)))


def _option(name: str) -> str:
    """A field as `adcast train` spells it: the messages serve the command line and Python alike."""
    return "--" + name.replace("_", "-")


def _check_sizes(cfg: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "hidden_size", "layers", "heads", "max_positions"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ConfigError(f"{_option(name)} must be 1 or more; got {getattr(cfg, name)}")
    for name in ("checkpoint_every", "stop_after_steps", "patience"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{_option(name)} is a count, 0 (never) or more; got {getattr(cfg, name)}")
    if cfg.max_minutes < 0:
        raise ConfigError(f"--max-minutes is a duration, 0 (no limit) or more; got {cfg.max_minutes}")
    if cfg.lr <= 0 or cfg.weight_decay < 0:
        raise ConfigError(f"--lr must be above 0 and --weight-decay 0 or more; got {cfg.lr} and {cfg.weight_decay}")


def _check_shares(cfg: TrainConfig) -> None:
    for name in ("return_smoothing", "new_smoothing"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ConfigError(f"{_option(name)} is a share of the target, between 0 and 1; got {getattr(cfg, name)}")
    if cfg.relabel is not None and cfg.relabel < 0:
        raise ConfigError(f"--relabel is a number of copies per example, 0 or more; got {cfg.relabel}")
    if not 0.0 < cfg.cutoff_fraction <= 1.0:
        raise ConfigError(f"--cutoff-fraction is a time quantile, above 0 and at most 1; got {cfg.cutoff_fraction}")
    if cfg.serving_delay < 0:
        raise ConfigError(f"--serving-delay is in seconds, 0 or more; got {cfg.serving_delay}")
    if not 0.0 <= cfg.validation < 1.0:
        raise ConfigError(f"--validation is a share of the users, 0 (none) or more and below 1; got {cfg.validation}")
    if cfg.patience and not cfg.validation:
        raise ConfigError("--patience counts epochs without a better validation loss: give --validation too")


def _check_batches(cfg: TrainConfig) -> None:
    # One process's rule; adcast.train.schedule.accumulation_steps adds the ranks' at run time.
    g, b = cfg.global_batch, cfg.batch_size
    if g is not None and (g < b or g % b):
        raise ConfigError(f"--global-batch {g} must be a multiple of the batch size {b} (examples per forward pass)")


def _check_lora(cfg: TrainConfig) -> None:
    if cfg.lora_rank < 0:
        raise ConfigError(f"--lora-rank must be 0 (full fine-tuning) or more; got {cfg.lora_rank}")
    if cfg.lora_alpha is not None and not cfg.lora_rank:
        raise ConfigError("--lora-alpha scales LoRA adapters: give --lora-rank too, or drop --lora-alpha")
    if cfg.lora_alpha is not None and cfg.lora_alpha <= 0:
        raise ConfigError(f"--lora-alpha must be above 0; got {cfg.lora_alpha}")
    if not cfg.lora_targets:
        raise ConfigError("--lora-targets names no module")
