"""Import a pretrained base model as a plain Hugging Face checkpoint that `adcast train --base` takes.

A GGUF file (llama.cpp's format, often 4-bit) is loaded through transformers' GGUF reader, which
dequantizes it to fp32, and saved without its quantization config: transformers refuses to save
a GGUF-quantized model, and neither engine loads one. A Hugging Face directory needs no import:
`--base` takes it as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from adcast.errors import ConfigError, DependencyMissing


@dataclass(frozen=True)
class ImportReport:
    architecture: str
    parameters: int
    vocabulary: int
    layers: int
    hidden_size: int
    seconds: float
    out_dir: str
    bytes_written: int


def import_gguf(gguf: str | Path, out_dir: str | Path) -> ImportReport:
    """Dequantize the GGUF file `gguf` to an fp32 Hugging Face checkpoint at `out_dir`."""
    started = time.monotonic()
    path = Path(gguf)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; --gguf takes a .gguf model file")
    try:
        import gguf as _gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError as exc:
        raise DependencyMissing("gguf", "infer-cpu") from exc
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; give --out a new directory")
    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The same architecture and weights, without the GGUF quantization config.
    fields = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    config = AutoConfig.for_model(**fields)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # A tied output embedding is the input embedding: its absence from the state dict is expected.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ConfigError(f"{path.name}: weights do not match its architecture (missing {missing}, extra {unexpected})")
    del loaded
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ImportReport(
        architecture=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        vocabulary=len(tokenizer),
        layers=int(getattr(config, "num_hidden_layers", 0)),
        hidden_size=int(getattr(config, "hidden_size", 0)),
        seconds=time.monotonic() - started,
        out_dir=str(out),
        bytes_written=written,
    )


def format_report(r: ImportReport) -> str:
    return (
        f"imported a {r.architecture} ({r.parameters / 1e6:.1f}M parameters, {r.layers} layers, hidden "
        f"{r.hidden_size}, vocabulary {r.vocabulary:,}) in {r.seconds:.0f}s: {r.bytes_written / 2**20:.0f} MiB "
        f"at {r.out_dir}; train on it with `adcast train --base {r.out_dir} …`"
    )
