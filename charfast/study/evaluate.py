"""Scoring a model on task examples: greedy exact match and teacher-forced answer loss.

Exact match (what the study lacked): the model sees the question, decodes greedily until
it writes a newline (or runs out of tokens), and is right when the answer value read from
that line equals the true one (charfast.study.tasks.is_exact_match). The teacher-forced answer
loss is the study's measure: mean cross-entropy of the true answer's tokens given the
question and the true answer so far.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from charfast.gpt.model import IGNORE_INDEX
from charfast.study.task_data import ANSWER_END, answer_masked_batch, encode_example
from charfast.study.tasks import Example, is_exact_match


@dataclass(frozen=True)
class ExampleResult:
    task: str
    split: str
    word: str
    correct: bool
    answer_loss: float  # mean nats per answer token, teacher-forced
    generated: str


def greedy_answer(model, encoding, prompt: list[int], max_new_tokens: int, device) -> str:
    """The text the model writes after `prompt`, decoding greedily up to its first newline."""
    generated: list[int] = []
    for token in model.generate_stream(torch.tensor([prompt], device=device), max_new_tokens, temperature=0):
        generated.append(int(token))
        text = encoding.decode(generated, errors="replace")
        if ANSWER_END in text:
            return text
    return encoding.decode(generated, errors="replace")


@torch.no_grad()
def answer_losses(model, encoded, device) -> list[float]:
    """Per example: mean teacher-forced cross-entropy of its answer tokens."""
    x, y = answer_masked_batch(encoded, model.config.block_size)
    x, y = x.to(device), y.to(device)
    logits = model(x)[0].float()  # [B, T, V]
    token_loss = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE_INDEX, reduction="none")  # [B, T]
    scored = (y != IGNORE_INDEX).float()
    return (token_loss.sum(dim=1) / scored.sum(dim=1)).tolist()


def evaluate_examples(
    model, encoding, examples: list[tuple[str, Example]], device="cpu", batch_size: int = 64, extra_tokens: int = 4
) -> list[ExampleResult]:
    """Score (split, example) pairs. Decoding may run `extra_tokens` past the true answer's
    length, so a longer wrong answer is read whole before it is judged."""
    was_training = model.training
    model.eval()
    try:
        encoded = [encode_example(encoding, example) for _, example in examples]
        losses: list[float] = []
        for start in range(0, len(encoded), batch_size):
            losses += answer_losses(model, encoded[start : start + batch_size], device)
        results = []
        for (split, example), enc, loss in zip(examples, encoded, losses):
            generated = greedy_answer(model, encoding, enc.prompt, len(enc.answer) + extra_tokens, device)
            results.append(
                ExampleResult(example.task, split, example.word, is_exact_match(example, generated), loss, generated)
            )
        return results
    finally:
        model.train(was_training)


def summarize(results: list[ExampleResult]) -> dict[tuple[str, str], dict]:
    """(task, split) -> {"n", "exact_match", "answer_loss"} (means over the examples)."""
    groups: dict[tuple[str, str], list[ExampleResult]] = defaultdict(list)
    for result in results:
        groups[(result.task, result.split)].append(result)
    return {
        key: {
            "n": len(rs),
            "exact_match": sum(r.correct for r in rs) / len(rs),
            "answer_loss": sum(r.answer_loss for r in rs) / len(rs),
        }
        for key, rs in sorted(groups.items())
    }
