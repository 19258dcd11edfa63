import math
import random
from types import SimpleNamespace

import pytest
import torch

from charfast import GPT, GPTConfig
from charfast.gpt.generation import new_tokens
from charfast.gpt.model import IGNORE_INDEX
from charfast.study.evaluate import decoding_budget, evaluate_examples, greedy_answers, summarize
from charfast.study.task_data import answer_masked_batch, encode_example
from charfast.study.tasks import answer_renderings, make_example


@pytest.fixture(scope="module")
def examples():
    rng = random.Random(0)
    pairs = [
        ("train", make_example(task, word, rng))
        for task in ("reverse", "count", "spell")
        for word in ("strawberry", "banana")
    ]
    return pairs + [("heldout", make_example("index", "rhythm", rng))]


def test_loss_is_masked_to_the_answer(cl100k, examples):
    encoded = [encode_example(cl100k, ex) for _, ex in examples]
    x, y = answer_masked_batch(encoded, block_size=64)
    for row, (enc, (_, ex)) in enumerate(zip(encoded, examples)):
        scored = y[row][y[row] != IGNORE_INDEX].tolist()
        assert scored == enc.answer
        assert cl100k.decode(scored) == ex.answer + "\n"
        n = len(enc.ids)
        assert x[row, : n - 1].tolist() == enc.ids[:-1]  # inputs are the sequence, shifted targets
        assert (y[row, : len(enc.prompt) - 1] == IGNORE_INDEX).all()  # no loss on the question


def test_too_long_examples_are_rejected(cl100k, examples):
    with pytest.raises(ValueError, match="block_size"):
        answer_masked_batch([encode_example(cl100k, examples[0][1])], block_size=4)


class MemorisingModel(torch.nn.Module):
    """Knows every example's token sequence: predicts its next token with logit 30 (or,
    when `wrong`, always predicts the token of 'x'). A stand-in for a trained model."""

    def __init__(self, encoding, examples, wrong=False):
        super().__init__()
        self.config = SimpleNamespace(block_size=256)
        self.vocab = encoding.n_vocab
        self.wrong_id = encoding.encode_ordinary("x")[0]
        self.next = {}
        for _, example in examples:
            ids = encode_example(encoding, example).ids
            for i in range(1, len(ids)):
                self.next[tuple(ids[:i])] = ids[i]
        self.wrong = wrong

    def generate_stream(self, idx, max_new_tokens, temperature):
        return new_tokens(self, idx, max_new_tokens, temperature, top_k=None, use_cache=False)

    def forward(self, idx):
        logits = torch.zeros(*idx.shape, self.vocab)
        for b in range(idx.shape[0]):
            row = idx[b].tolist()
            for t in range(idx.shape[1]):
                target = self.wrong_id if self.wrong else self.next.get(tuple(row[: t + 1]), self.wrong_id)
                logits[b, t, target] = 30.0
        return logits, None


def test_a_model_that_knows_the_answers_scores_all_and_near_zero_loss(cl100k, examples):
    # Padding rows only matter where they are masked; prefixes of padding are unknown.
    results = evaluate_examples(MemorisingModel(cl100k, examples), cl100k, examples, batch_size=3)
    assert all(r.correct for r in results), [(r.task, r.generated) for r in results if not r.correct]
    assert all(r.answer_loss < 1e-6 for r in results)
    summary = summarize(results)
    assert summary[("reverse", "train")] == {"n": 2, "exact_match": 1.0, "answer_loss": pytest.approx(0, abs=1e-6)}
    assert summary[("index", "heldout")]["n"] == 1


def test_a_wrong_model_scores_nothing_and_decoding_stops(cl100k, examples):
    results = evaluate_examples(MemorisingModel(cl100k, examples, wrong=True), cl100k, examples, extra_tokens=2)
    assert not any(r.correct for r in results)
    assert all(r.answer_loss > 20 for r in results)
    for r, (_, ex) in zip(results, examples):  # bounded: the longest answer rendering + 2 tokens of 'x'
        longest = max(len(cl100k.encode_ordinary(text + "\n")) for text in answer_renderings(ex))
        assert r.generated == "x" * (longest + 2) == "x" * decoding_budget(cl100k, ex, extra_tokens=2)


def test_batched_decoding_stops_each_row_at_its_own_newline(cl100k, examples):
    """Questions of the same length decode as one batch; every row ends at its first
    newline, whatever the other rows of its batch still write."""
    model = MemorisingModel(cl100k, examples)
    prompts = [encode_example(cl100k, ex).prompt for _, ex in examples]
    one_by_one = [greedy_answers(model, cl100k, [p], [40], "cpu")[0] for p in prompts]
    together = greedy_answers(model, cl100k, prompts * 2, [40] * (2 * len(prompts)), "cpu", batch_size=4)
    assert together == one_by_one * 2
    assert all(text == ex.answer + "\n" for text, (_, ex) in zip(one_by_one, examples))


@pytest.fixture
def tiny_gpt(cl100k, cl100k_table):
    """An untrained one-layer char GPT over cl100k."""
    small = dict(n_layer=1, n_head=2, n_embd=16, char_dim=8, char_hidden=8, char_backend="reference")
    return GPT(GPTConfig(vocab_size=cl100k.n_vocab, block_size=64, **small), char_table=cl100k_table)


def test_an_untrained_gpt_runs_and_scores_about_chance(cl100k, examples, tiny_gpt):
    model = tiny_gpt
    results = evaluate_examples(model, cl100k, examples[:2], extra_tokens=1)
    assert model.training  # restored
    for r in results:
        assert abs(r.answer_loss - math.log(cl100k.n_vocab)) < 1.0


def test_gpt_loss_ignores_masked_targets(cl100k, examples, tiny_gpt):
    model = tiny_gpt
    x, y = answer_masked_batch([encode_example(cl100k, ex) for _, ex in examples], 64)
    logits, loss = model(x, y)
    scored = y != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[scored].float(), y[scored])
    torch.testing.assert_close(loss, manual)
