"""Tokenizers for the predictor: a word-level one built from the data (tiny models trained from
scratch), or a pretrained one with the advertiser tokens added."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, UNK = "[PAD]", "[UNK]"


def build_word_tokenizer(
    prompts: Iterable[str], advertiser_tokens: Sequence[str], min_count: int = 2, max_words: int = 30_000
) -> PreTrainedTokenizerFast:
    counts = Counter(w for p in prompts for w in p.split())
    reserved = set(advertiser_tokens)
    vocab = {PAD: 0, UNK: 1}
    for word, n in counts.most_common(max_words):
        if n >= min_count and word not in reserved and word not in vocab:
            vocab[word] = len(vocab)
    for token in advertiser_tokens:
        vocab[token] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token=UNK, pad_token=PAD)


def add_advertiser_tokens(tokenizer: PreTrainedTokenizerBase, advertiser_tokens: Sequence[str]) -> None:
    tokenizer.add_tokens(list(advertiser_tokens))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
