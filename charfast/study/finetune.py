"""Fine-tuning a pretrained GPT on character tasks, the loss masked to the answers.

Each step draws `batch_size` fresh examples: a task and a training word at random (from
a seeded stream, so a run is reproducible), rendered with random question and answer
templates. AdamW with a linear warmup and a cosine decay of the learning rate.
(Mixing in language-modelling data, which the study allows, is not built yet.)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from charfast.gpt.model import IGNORE_INDEX
from charfast.gpt.optim import cosine_decay
from charfast.study.task_data import answer_masked_batch, encode_example
from charfast.study.tasks import TASKS, Example, sample_example


@dataclass(frozen=True)
class FinetuneConfig:
    tasks: tuple[str, ...]
    steps: int = 500
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_fraction: float = 0.05  # linear warmup over this share of the steps, then cosine decay
    final_lr_fraction: float = 0.1  # the cosine ends at lr * this
    seed: int = 0

    def lr_at(self, step: int) -> float:
        """The learning rate of step 1..steps."""
        warmup = max(1, round(self.warmup_fraction * self.steps))
        if step <= warmup:
            return self.lr * step / warmup
        return self.lr * cosine_decay((step - warmup) / max(1, self.steps - warmup), self.final_lr_fraction)

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
        for name in ("warmup_fraction", "final_lr_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"FinetuneConfig: {name} must lie in [0, 1], got {getattr(self, name)}")


def example_stream(words: list[str], tasks: tuple[str, ...], seed: int) -> Iterator[Example]:
    """An endless seeded stream of examples, tasks drawn uniformly (sample_example: a task
    uses only words it can, and a classification task's classes are balanced)."""
    if not words:
        raise ValueError("example_stream: no words to make examples from")
    rng = random.Random(seed)
    while True:
        yield sample_example(rng.choice(tasks), words, rng)


def answer_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens of x, y [B, T] (y is IGNORE_INDEX
    elsewhere), with the LM head applied at those positions only."""
    return F.cross_entropy(model.logits_at_targets(x, y), y[y != IGNORE_INDEX])


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
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        x, y = x.to(device), y.to(device)
        loss = answer_loss(model, x, y)
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
