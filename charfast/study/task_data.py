"""Task examples as token sequences for fine-tuning: the loss is masked to the answer.

An example is tokenized as question tokens + answer tokens, where the answer text ends
with a newline: the model learns to stop there, and greedy decoding reads up to it. The
question and the answer are tokenized separately, so the boundary between them is the
same in training and at evaluation (where only the question is given).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charfast.gpt.model import IGNORE_INDEX
from charfast.study.tasks import Example

ANSWER_END = "\n"


@dataclass(frozen=True)
class EncodedExample:
    prompt: list[int]  # the question's tokens
    answer: list[int]  # the answer's tokens, ANSWER_END included

    @property
    def ids(self) -> list[int]:
        return self.prompt + self.answer


def encode_example(encoding, example: Example) -> EncodedExample:
    return EncodedExample(
        encoding.encode_ordinary(example.question), encoding.encode_ordinary(example.answer + ANSWER_END)
    )


def answer_masked_batch(encoded: list[EncodedExample], block_size: int, pad_id: int = 0):
    """(x [B, T], y [B, T]) int64 for a batch of examples: y is x shifted by one, with
    IGNORE_INDEX wherever the target is a question token or padding. T = the longest
    example minus one; examples longer than block_size + 1 tokens are an error."""
    if not encoded:
        raise ValueError("answer_masked_batch: no examples")
    longest = max(len(e.ids) for e in encoded)
    if longest - 1 > block_size:
        raise ValueError(
            f"a task example has {longest} tokens, more than block_size + 1 = {block_size + 1}; "
            f"use a larger block size or shorter words"
        )
    x = torch.full((len(encoded), longest - 1), pad_id, dtype=torch.long)  # [B, T]
    y = torch.full((len(encoded), longest - 1), IGNORE_INDEX, dtype=torch.long)  # [B, T]
    for row, example in enumerate(encoded):
        ids = torch.tensor(example.ids)
        x[row, : len(ids) - 1] = ids[:-1]
        start = len(example.prompt) - 1  # position whose target is the first answer token
        y[row, start : len(ids) - 1] = ids[len(example.prompt) :]
    return x, y
