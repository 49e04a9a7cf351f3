"""A real pretrained LLM through the path: SmolLM2-135M-Instruct, imported from its GGUF file by
`make base-model` (adcast import-model), fine-tuned with LoRA for a few steps on a small world,
merged, and scored by both engines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine_parity import assert_engines_agree, both_engines

from adcast.core.examples import iter_examples
from adcast.core.history import HistoryLimits
from adcast.core.prompt import render
from adcast.data.files import read_records, write_records
from adcast.model_meta import ModelMeta

# The engines fixture builds the vLLM engine in this process when vLLM is installed.
pytestmark = [pytest.mark.integration, pytest.mark.vllm]
torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]
BASE = Path(os.environ.get("ADCAST_BASE_MODEL", ROOT / ".adcast" / "models" / "smollm2-135m"))


@pytest.fixture(scope="module")
def base() -> Path:
    if not (BASE / "config.json").is_file():
        pytest.skip(f"no imported base model at {BASE}: run `make base-model` (CI does)")
    return BASE


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from adcast.data.synthetic import WorldSpec, generate

    folder = tmp_path_factory.mktemp("base-world")
    for kind, records in generate(WorldSpec(users=6, advertisers=16, seed=5, days=4)).items():
        write_records(folder, kind, records)
    return folder


@pytest.fixture(scope="module")
def tuned(base, world, tmp_path_factory) -> Path:
    from adcast.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("tuned") / "smollm2-lora"
    cfg = TrainConfig(epochs=1, batch_size=8, global_batch=16, lr=2e-4, lora_rank=4, gradient_checkpointing=True)
    report = train(world, out, cfg, base=str(base), progress=False)
    assert report.last_loss < report.first_loss * 1.5  # a few steps: moving, not yet much lower
    return out


def test_the_imported_base_is_a_plain_checkpoint_that_speaks_english(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    assert getattr(model.config, "quantization_config", None) is None
    tokenizer = AutoTokenizer.from_pretrained(base)
    asked = tokenizer("The capital of France is", return_tensors="pt")
    answer = tokenizer.decode(model.generate(**asked, max_new_tokens=6, do_sample=False)[0])
    assert "Paris" in answer, answer


def test_lora_adds_advertiser_tokens_started_from_their_names_and_keeps_the_rest(base, world, tuned):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from adcast.core.text import text_words

    meta = ModelMeta.load(tuned)
    tokenizer = AutoTokenizer.from_pretrained(tuned)
    original = AutoTokenizer.from_pretrained(base)
    assert len(tokenizer) == len(original) + len(meta.advertiser_ids)
    for token, token_id in zip(meta.tokens, meta.token_ids, strict=True):
        assert tokenizer.convert_tokens_to_ids(token) == token_id >= len(original)
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [token_id]  # one token each

    weights = load_file(tuned / "model.safetensors")
    assert not [k for k in weights if "lora" in k]  # merged: a plain checkpoint
    before = load_file(base / "model.safetensors")["model.embed_tokens.weight"]
    after = weights["model.embed_tokens.weight"]
    assert torch.equal(after[: len(original)], before)  # only the advertiser rows were trained
    # Each advertiser row started at the mean of its name's token embeddings, and a few steps
    # at a small learning rate leave it there.
    names = {a["advertiser_id"]: a["name"] for a in read_records(world, "advertisers")}
    close = 0
    for adv, token_id in zip(meta.advertiser_ids, meta.token_ids, strict=True):
        words = original([names[adv], " ".join(text_words(names[adv]))], add_special_tokens=False)["input_ids"]
        start = before[sorted({i for row in words for i in row})].mean(dim=0)
        close += torch.nn.functional.cosine_similarity(after[token_id], start, dim=0).item() > 0.9
    assert close >= 0.9 * len(meta.advertiser_ids)


@pytest.fixture(scope="module")
def engines(tuned):
    # vLLM in eager mode: compiling 30 layers costs minutes on the CPU and changes no score; the
    # compiled path is the engine contract's (test_engine_contract.py).
    yield from both_engines(tuned, vllm_compile=False)


def test_both_engines_score_the_fine_tuned_model_alike(engines, world, tuned):
    if "vllm" not in engines:
        pytest.skip("vllm is not installed in this environment")
    advertisers = {a["advertiser_id"] for a in read_records(world, "advertisers")}
    profiles = {p["user_id"]: p["attributes"] for p in read_records(world, "profiles")}
    examples = list(iter_examples(read_records(world, "events"), profiles, advertisers, HistoryLimits()))
    prompts = [render(ex) for ex in examples[:: max(1, len(examples) // 24)]]
    known = set(ModelMeta.load(tuned).advertiser_ids)
    a, b = engines["torch"].score(prompts, 10), engines["vllm"].score(prompts, 10)
    for top in a + b:
        assert len(top) == 10 and {i for i, _ in top} <= known
    assert_engines_agree(a, b)  # the engines' parity bar
