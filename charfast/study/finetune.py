"""Fine-tuning a pretrained GPT on character tasks, the loss masked to the answers.

Each step draws `batch_size` fresh examples: a task and a training word at random (from
a seeded stream, so a run is reproducible), rendered with random question and answer
templates. (Mixing in language-modelling data, which the study allows, is not built yet.)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from charfast.study.task_data import answer_masked_batch, encode_example
from charfast.study.tasks import TASKS, Example, make_example


@dataclass(frozen=True)
class FinetuneConfig:
    tasks: tuple[str, ...]
    steps: int = 500
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or unknown:
            raise ValueError(
                f"FinetuneConfig: tasks must be a non-empty list of {', '.join(TASKS)}; unknown: {unknown}"
            )
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"FinetuneConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"FinetuneConfig: lr must be > 0, got {self.lr}")


def example_stream(words: list[str], tasks: tuple[str, ...], seed: int) -> Iterator[Example]:
    """An endless seeded stream of examples; a task skips words it cannot use (e.g. swap
    needs two distinct letters)."""
    if not words:
        raise ValueError("example_stream: no words to make examples from")
    rng = random.Random(seed)
    while True:
        task, word = rng.choice(tasks), rng.choice(words)
        if len(set(word)) >= TASKS[task].min_distinct_letters:
            yield make_example(task, word, rng)


def finetune(model, encoding, words: list[str], config: FinetuneConfig, device="cpu", on_step=None) -> list[dict]:
    """Train `model` in place; returns [{"step", "train_loss"}] and calls on_step(record)."""
    config.validate()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    stream = example_stream(words, config.tasks, config.seed)
    torch.manual_seed(config.seed)  # dropout
    records = []
    for step in range(1, config.steps + 1):
        batch = [encode_example(encoding, next(stream)) for _ in range(config.batch_size)]
        x, y = answer_masked_batch(batch, model.config.block_size)
        _, loss = model(x.to(device), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        record = {"step": step, "train_loss": loss.item()}
        records.append(record)
        if on_step is not None:
            on_step(record)
    return records
