"""The model's commands: `adcast examples`, `adcast train` and `adcast import-model`. Nothing here imports torch
until a command runs, so the stream tier's environment still builds the whole command line."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from adcast.commands import AddCommand
from adcast.config import Settings
from adcast.core.examples import DEFAULT_CUTOFF_FRACTION
from adcast.errors import require
from adcast.train.config import EXAMPLES_PER_RUN, MAX_AUTO_EPOCHS, TrainConfig

# `adcast train`'s defaults are TrainConfig's: one list of them, shown by --help.
DEFAULTS = TrainConfig()
_HINTS = typing.get_type_hints(TrainConfig)
SERVING_DELAY_HELP = (
    "events less than this many seconds before an engagement are left out of its prompt: a "
    "prediction is never fresher than the pipeline that makes it (default: %(default)s)"
)


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    require("torch", "infer-cpu")
    from adcast.train.trainer import train

    cfg = train_config(args)
    limits = settings.stream.history_limits()  # the prompts the stream tier will send
    report = train(args.data, args.out, cfg, args.base, limits, progress=not args.quiet, resume=args.resume)
    print(
        f"trained on {report.examples} examples, {report.epochs:.3g} epochs in {report.seconds:.0f}s; "
        f"loss {report.first_loss:.3f} -> {report.last_loss:.3f}; saved to {report.model_dir}"
    )
    return 0


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The settings of `adcast train`: each option named after a TrainConfig field sets it; fields
    without an option keep their default."""
    given = vars(args)
    return TrainConfig(**{f.name: given[f.name] for f in fields(TrainConfig) if f.name in given})


def cmd_examples(args: argparse.Namespace, settings: Settings) -> int:
    require("duckdb", "infer-cpu")
    from adcast.train.shards import build_shards

    m = build_shards(
        args.data,
        args.out,
        args.cutoff_fraction,
        settings.stream.history_limits(),
        shard_examples=args.shard_examples,
        memory_limit=args.memory_limit,
        progress=not args.quiet,
        serving_delay_ms=round(args.serving_delay * 1000),
    )
    print(f"{m.examples:,} examples from {m.events:,} events in {len(m.shards)} shards; saved to {args.out}")
    return 0


def cmd_import_model(args: argparse.Namespace, settings: Settings) -> int:
    require("torch", "infer-cpu")
    from adcast.train.import_model import format_report, import_gguf

    print(format_report(import_gguf(args.gguf, args.out)))
    return 0


def add_model_commands(add: AddCommand) -> None:
    """AddCommand `examples`, `train` and `import-model` through the command line's `add(name, fn, help)`."""
    _add_examples(add)
    _add_train(add)
    _add_import_model(add)


def _add_examples(add: AddCommand) -> None:
    ex = add(
        "examples",
        cmd_examples,
        "build the training examples of a data directory as Parquet shards, out of core (DuckDB sorts the "
        "events on disk); adcast train --data SHARDS trains from them",
    )
    ex.add_argument("--data", required=True, help="data directory in the interchange format")
    ex.add_argument("--out", required=True, help="output folder of the shards")
    ex.add_argument(
        "--cutoff-fraction",
        type=float,
        default=DEFAULT_CUTOFF_FRACTION,
        help=f"targets before this time quantile (default: {DEFAULT_CUTOFF_FRACTION})",
    )
    ex.add_argument(
        "--serving-delay",
        type=float,
        default=DEFAULTS.serving_delay,
        metavar="SECONDS",
        help=SERVING_DELAY_HELP.replace("%(default)s", str(DEFAULTS.serving_delay)),
    )
    ex.add_argument("--shard-examples", type=int, default=200_000, help="examples per shard (default: 200000)")
    ex.add_argument(
        "--memory-limit", default="1GB", help="DuckDB's memory for the sort before it spills to disk (default: 1GB)"
    )
    ex.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_import_model(add: AddCommand) -> None:
    im = add(
        "import-model",
        cmd_import_model,
        "turn a pretrained GGUF model file into a Hugging Face checkpoint that `adcast train --base` takes "
        "(dequantized to fp32; a Hugging Face directory needs no import)",
    )
    im.add_argument("--gguf", required=True, metavar="FILE", help="the .gguf model file (e.g. `make base-model`'s)")
    im.add_argument("--out", required=True, help="output directory (new or empty)")


def _config_option(parser: Any, name: str, help: str, **kwargs: Any) -> None:
    """`--name` for TrainConfig's field `name`: its default and type are the field's (`%(default)s`
    in `help` shows the default)."""
    flag, default = "--" + name.replace("_", "-"), getattr(DEFAULTS, name)
    if isinstance(default, bool):
        parser.add_argument(flag, action="store_true", default=default, help=help, **kwargs)
    elif isinstance(default, tuple):
        # argparse passes a string default through `type` too: the option's default is the field's tuple.
        parser.add_argument(flag, type=_names, default=",".join(default), help=help, **kwargs)
    else:
        parser.add_argument(flag, type=_value_type(name), default=default, help=help, **kwargs)


def _value_type(name: str) -> Callable[[str], Any]:
    """What parses a field's value: its annotated type (`int | None` parses as int)."""
    hint = _HINTS[name]
    return next((t for t in typing.get_args(hint) if t is not type(None)), hint)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _add_train(add: AddCommand) -> None:
    t = add("train", cmd_train, "train the advertiser predictor; writes a Hugging Face checkpoint directory")
    t.add_argument(
        "--data",
        required=True,
        help="data directory in the interchange format, or example shards made by adcast examples (the "
        "examples of a data directory are built as shards first, out of core)",
    )
    t.add_argument("--out", required=True, help="output model directory")
    t.add_argument(
        "--base",
        default=None,
        help="local pretrained Hugging Face checkpoint to fine-tune (adcast import-model makes one from a GGUF "
        "file; default: a tiny Llama trained from scratch)",
    )
    _config_option(
        t,
        "epochs",
        "passes over the training examples (default: from the data: enough to see about "
        f"{EXAMPLES_PER_RUN:,} examples, 1 to {MAX_AUTO_EPOCHS} passes)",
    )
    _config_option(t, "seed", "random seed of the model, the batches and the validation slice (default: %(default)s)")
    _config_option(t, "cutoff_fraction", "train on events before this time quantile (default: %(default)s)")
    _config_option(t, "serving_delay", SERVING_DELAY_HELP, metavar="SECONDS")
    _config_option(t, "device", "cpu or cuda (bf16 autocast on cuda; default: %(default)s)")
    _add_model_options(t)
    _add_target_options(t)
    _add_run_options(t)


def _add_model_options(t: argparse.ArgumentParser) -> None:
    _config_option(t, "hidden_size", "width of the from-scratch model (ignored with --base; default: %(default)s)")
    _config_option(t, "layers", "decoder layers of the from-scratch model (ignored with --base; default: %(default)s)")
    _config_option(t, "lr", "peak learning rate (cosine schedule with warm-up; default: %(default)s)")
    _config_option(t, "weight_decay", "AdamW weight decay (default: %(default)s)")
    _config_option(t, "batch_size", "examples per forward pass (default: %(default)s)")
    _config_option(
        t,
        "global_batch",
        "examples per optimizer step, a multiple of --batch-size: gradients are accumulated over "
        "N / batch-size forward passes (default: the batch size)",
        metavar="N",
    )
    _config_option(
        t,
        "gradient_checkpointing",
        "recompute activations in the backward pass: less memory for large bases, about a third slower",
    )
    lora = t.add_argument_group("LoRA (with --base): adapters on the projections, advertiser rows trained in full")
    _config_option(lora, "lora_rank", "adapter rank (0: full fine-tuning; default: %(default)s)", metavar="R")
    _config_option(lora, "lora_alpha", "adapter scale (default: 2 x rank)")
    _config_option(lora, "lora_targets", "modules to adapt (default: %(default)s)")


def _add_target_options(t: argparse.ArgumentParser) -> None:
    _config_option(
        t,
        "return_smoothing",
        "on a return to one of the user's own advertisers, the share of the target spread over all of "
        "them (0: one-hot targets; default: %(default)s)",
    )
    _config_option(
        t,
        "new_smoothing",
        "on an engagement with an advertiser new to the user, the share of the target spread over all "
        "advertisers of its category (0: one-hot targets; default: %(default)s)",
    )
    _config_option(
        t,
        "relabel",
        "relabelled copies per epoch of each example whose target is in the user's history, its "
        "advertisers swapped for random ones: they teach the model to copy advertisers seen in few examples "
        "(default: 1 / training examples per advertiser, at most 1)",
    )


def _add_run_options(t: argparse.ArgumentParser) -> None:
    _config_option(
        t,
        "validation",
        "share of the users held out and scored after each epoch; the best epoch is saved (default: %(default)s, none)",
        metavar="SHARE",
    )
    _config_option(
        t,
        "patience",
        "with --validation: stop after this many epochs without improvement (default: %(default)s, never)",
    )
    _config_option(
        t,
        "max_minutes",
        "time box: end training after M minutes of steps (the clock starts once the examples are built) and "
        "save the model; the learning rate decays over the steps or the minutes, whichever runs out first, so "
        "give --epochs enough to fill the box (default: %(default)s, no box; cannot --resume)",
        metavar="M",
    )
    _config_option(t, "checkpoint_every", "steps between resumable checkpoints (0: none; default: %(default)s)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
