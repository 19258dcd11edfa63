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
from charfast.study.tasks import Example, answer_renderings, is_exact_match


@dataclass(frozen=True)
class ExampleResult:
    task: str
    split: str
    word: str
    correct: bool
    answer_loss: float  # mean nats per answer token, teacher-forced
    generated: str


@torch.no_grad()
def greedy_answers(model, encoding, prompts: list[list[int]], budgets: list[int], device, batch_size: int = 64):
    """The text the model writes after each prompt, decoding greedily until it writes a
    newline or has written its budget of tokens. Prompts of the same length decode
    together, one batch of rows per step."""
    texts = [""] * len(prompts)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, prompt in enumerate(prompts):
        by_length[len(prompt)].append(i)
    for members in by_length.values():
        for start in range(0, len(members), batch_size):
            rows = members[start : start + batch_size]
            generated: list[list[int]] = [[] for _ in rows]
            done = [False] * len(rows)
            idx = torch.tensor([prompts[i] for i in rows], device=device)  # [B, T0]
            for step, token in enumerate(model.generate_stream(idx, max(budgets[i] for i in rows), temperature=0)):
                for r, token_id in enumerate(token[:, 0].tolist()):  # token [B, 1]
                    if not done[r]:
                        generated[r].append(token_id)
                        written = encoding.decode(generated[r], errors="replace")
                        done[r] = ANSWER_END in written or step + 1 >= budgets[rows[r]]
                if all(done):
                    break
            for r, i in enumerate(rows):
                texts[i] = encoding.decode(generated[r], errors="replace")
    return texts


@torch.no_grad()
def answer_losses(model, encoded, device) -> list[float]:
    """Per example: mean teacher-forced cross-entropy of its answer tokens."""
    x, y = answer_masked_batch(encoded, model.config.block_size)
    x, y = x.to(device), y.to(device)
    logits = model(x)[0].float()  # [B, T, V]
    token_loss = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE_INDEX, reduction="none")  # [B, T]
    scored = (y != IGNORE_INDEX).float()
    return (token_loss.sum(dim=1) / scored.sum(dim=1)).tolist()


def decoding_budget(encoding, example: Example, extra_tokens: int) -> int:
    """Tokens a model may write for `example`: its longest answer rendering (any template)
    plus `extra_tokens`, so a longer wrong answer is read whole before it is judged."""
    longest = max(len(encoding.encode_ordinary(text + ANSWER_END)) for text in answer_renderings(example))
    return longest + extra_tokens


def evaluate_examples(
    model, encoding, examples: list[tuple[str, Example]], device="cpu", batch_size: int = 64, extra_tokens: int = 4
) -> list[ExampleResult]:
    """Score (split, example) pairs: greedy exact match and teacher-forced answer loss."""
    was_training = model.training
    model.eval()
    try:
        encoded = [encode_example(encoding, example) for _, example in examples]
        losses: list[float] = []
        for start in range(0, len(encoded), batch_size):
            losses += answer_losses(model, encoded[start : start + batch_size], device)
        budgets = [decoding_budget(encoding, example, extra_tokens) for _, example in examples]
        generated = greedy_answers(model, encoding, [e.prompt for e in encoded], budgets, device, batch_size)
        return [
            ExampleResult(example.task, split, example.word, is_exact_match(example, text), loss, text)
            for (split, example), loss, text in zip(examples, losses, generated)
        ]
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
