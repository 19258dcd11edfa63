import itertools
import random

import pytest
import torch

from charfast import GPT, GPTConfig, TokenCharTable
from charfast.gpt.bpe import train_bpe
from charfast.study.evaluate import evaluate_examples, summarize
from charfast.study.finetune import FinetuneConfig, example_stream, finetune
from charfast.study.tasks import make_example

WORDS = ["strawberry", "banana", "rhythm", "queue", "apple", "lemon", "melon", "grape"]


def test_example_stream_is_seeded_and_skips_unusable_words():
    first = list(itertools.islice(example_stream(WORDS + ["aaaaa"], ("swap", "reverse"), 3), 50))
    again = list(itertools.islice(example_stream(WORDS + ["aaaaa"], ("swap", "reverse"), 3), 50))
    assert first == again
    assert not any(e.task == "swap" and e.word == "aaaaa" for e in first)
    assert {e.task for e in first} == {"swap", "reverse"}


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(tasks=()), "non-empty"),
        (dict(tasks=("nope",)), "unknown"),
        (dict(steps=0), "steps"),
        (dict(lr=0.0), "lr"),
        (dict(warmup_fraction=1.5), "warmup_fraction"),
        (dict(final_lr_fraction=-0.1), "final_lr_fraction"),
    ],
)
def test_bad_finetune_config(overrides, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig(**{"tasks": ("reverse",), **overrides}).validate()


def test_the_learning_rate_warms_up_then_decays_to_its_final_fraction():
    config = FinetuneConfig(tasks=("reverse",), steps=1000, lr=1e-3, warmup_fraction=0.05, final_lr_fraction=0.1)
    rates = [config.lr_at(step) for step in range(1, 1001)]
    assert rates[0] == pytest.approx(1e-3 / 50) and rates[49] == pytest.approx(1e-3)  # linear warmup, 50 steps
    assert all(a >= b for a, b in zip(rates[49:], rates[50:]))  # then it only decays
    assert rates[-1] == pytest.approx(1e-4)
    assert rates[524] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5), rel=1e-2)  # half way down the cosine


def test_finetuning_learns_a_task(tmp_path):
    # A tiny model learns to answer "reverse" for a handful of words: exact match must rise.
    torch.manual_seed(0)
    encoding = train_bpe(["the quick brown fox " * 50 + " ".join(WORDS) * 20], 300, cache_dir=tmp_path)
    table = TokenCharTable.from_tiktoken(encoding, cache_dir=tmp_path)
    model = GPT(
        GPTConfig(
            vocab_size=encoding.n_vocab, block_size=80, n_layer=2, n_head=2, n_embd=48, char_dim=16, char_hidden=32
        ),
        char_table=table,
    )
    rng = random.Random(1)
    tests = [("train", make_example("reverse", w, rng)) for w in WORDS[:4]]
    before = summarize(evaluate_examples(model, encoding, tests))[("reverse", "train")]
    records = finetune(
        model, encoding, WORDS[:4], FinetuneConfig(tasks=("reverse",), steps=150, batch_size=16, lr=3e-3, seed=0)
    )
    after = summarize(evaluate_examples(model, encoding, tests))[("reverse", "train")]
    assert records[-1]["train_loss"] < records[0]["train_loss"] / 4
    assert after["answer_loss"] < before["answer_loss"] / 4
    assert before["exact_match"] == 0 and after["exact_match"] >= 0.5
