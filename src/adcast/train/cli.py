"""The model's commands: `adcast examples`, `adcast train` and `adcast import-model`. Nothing here imports torch
until a command runs, so the stream tier's environment still builds the whole command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from adcast.config import Settings
from adcast.core.examples import DEFAULT_CUTOFF_FRACTION
from adcast.errors import ConfigError, require
from adcast.train.lora import DEFAULT_TARGETS

LORA_TARGETS = ",".join(DEFAULT_TARGETS)


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    require("torch", "infer-cpu")
    from adcast.train.trainer import TrainConfig, train

    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    if not targets:
        raise ConfigError("--lora-targets names no module")
    cfg = TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        cutoff_fraction=args.cutoff_fraction,
        device=args.device,
        checkpoint_every=args.checkpoint_every,
        hidden_size=args.hidden_size,
        layers=args.layers,
        lr=args.lr,
        weight_decay=args.weight_decay,
        return_smoothing=args.return_smoothing,
        new_smoothing=args.new_smoothing,
        relabel=args.relabel,
        batch_size=args.batch_size,
        global_batch=args.global_batch,
        gradient_checkpointing=args.gradient_checkpointing,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_targets=targets,
        validation=args.validation,
        patience=args.patience,
        max_minutes=args.max_minutes,
    )
    limits = settings.stream.history_limits()  # the prompts the stream tier will send
    report = train(args.data, args.out, cfg, args.base, limits, progress=not args.quiet, resume=args.resume)
    print(
        f"trained on {report.examples} examples, {report.epochs:.3g} epochs in {report.seconds:.0f}s; "
        f"loss {report.first_loss:.3f} -> {report.last_loss:.3f}; saved to {report.model_dir}"
    )
    return 0


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
    )
    print(f"{m.examples:,} examples from {m.events:,} events in {len(m.shards)} shards; saved to {args.out}")
    return 0


def cmd_import_model(args: argparse.Namespace, settings: Settings) -> int:
    require("torch", "infer-cpu")
    from adcast.train.import_model import format_report, import_gguf

    print(format_report(import_gguf(args.gguf, args.out)))
    return 0


def add_model_commands(add: Callable[[str, Callable[[argparse.Namespace, Settings], int], str], Any]) -> None:
    """Add `examples`, `train` and `import-model` through the command line's `add(name, fn, help)`."""
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
    ex.add_argument("--shard-examples", type=int, default=200_000, help="examples per shard (default: 200000)")
    ex.add_argument(
        "--memory-limit", default="1GB", help="DuckDB's memory for the sort before it spills to disk (default: 1GB)"
    )
    ex.add_argument("--quiet", action="store_true", help="no progress bar")

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
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--cutoff-fraction",
        type=float,
        default=DEFAULT_CUTOFF_FRACTION,
        help="train on events before this time quantile",
    )
    t.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda)")
    t.add_argument("--hidden-size", type=int, default=128, help="width of the from-scratch model (ignored with --base)")
    t.add_argument(
        "--layers", type=int, default=2, help="decoder layers of the from-scratch model (ignored with --base)"
    )
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine schedule with warm-up)")
    t.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default: 0.1)")
    t.add_argument("--batch-size", type=int, default=64, help="examples per forward pass (default: 64)")
    t.add_argument(
        "--global-batch",
        type=int,
        default=None,
        metavar="N",
        help="examples per optimizer step, a multiple of --batch-size: gradients are accumulated over "
        "N / batch-size forward passes (default: the batch size)",
    )
    t.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass: less memory for large bases, about a third slower",
    )
    lora = t.add_argument_group("LoRA (with --base): adapters on the projections, advertiser rows trained in full")
    lora.add_argument("--lora-rank", type=int, default=0, metavar="R", help="adapter rank (0: full fine-tuning)")
    lora.add_argument("--lora-alpha", type=float, default=None, help="adapter scale (default: 2 x rank)")
    lora.add_argument("--lora-targets", default=LORA_TARGETS, help=f"modules to adapt (default: {LORA_TARGETS})")
    t.add_argument(
        "--return-smoothing",
        type=float,
        default=0.3,
        help="on a return to one of the user's own advertisers, the share of the target spread over all of "
        "them (0: one-hot targets; default: 0.3)",
    )
    t.add_argument(
        "--new-smoothing",
        type=float,
        default=0.3,
        help="on an engagement with an advertiser new to the user, the share of the target spread over all "
        "advertisers of its category (0: one-hot targets; default: 0.3)",
    )
    t.add_argument(
        "--relabel",
        type=float,
        default=None,
        help="relabelled copies per epoch of each example whose target is in the user's history, its "
        "advertisers swapped for random ones: they teach the model to copy advertisers seen in few examples "
        "(default: 1 / training examples per advertiser, at most 1)",
    )
    t.add_argument(
        "--validation",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of the users held out and scored after each epoch; the best epoch is saved (default: 0, none)",
    )
    t.add_argument(
        "--patience", type=int, default=0, help="with --validation: stop after this many epochs without improvement"
    )
    t.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        metavar="M",
        help="time box: end training after M minutes of steps (the clock starts once the examples are built) and "
        "save the model; the learning rate decays over the steps or the minutes, whichever runs out first, so "
        "give --epochs enough to fill the box (default: 0, no box; cannot --resume)",
    )
    t.add_argument("--checkpoint-every", type=int, default=200, help="steps between resumable checkpoints (0: none)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    im = add(
        "import-model",
        cmd_import_model,
        "turn a pretrained GGUF model file into a Hugging Face checkpoint that `adcast train --base` takes "
        "(dequantized to fp32; a Hugging Face directory needs no import)",
    )
    im.add_argument("--gguf", required=True, metavar="FILE", help="the .gguf model file (e.g. `make base-model`'s)")
    im.add_argument("--out", required=True, help="output directory (new or empty)")
