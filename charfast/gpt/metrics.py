"""A run's metrics.jsonl: one JSON object per optimizer step, appended as the run goes, and
the step record it holds (step, lr, train_loss, tokens_per_s, ms_per_step, grad_norm
[, mfu, char_grad_share, val_loss])."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from charfast.atomic import atomic_write


class MetricsLog:
    """metrics.jsonl at `path`; `records` holds every record of the run, resumed ones included."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict] = []

    def start(self, resume_step: int | None) -> None:
        """A fresh file for a new run. When resuming at `resume_step`, the records up to it
        are kept (a killed run may have logged steps after its last checkpoint) and the file
        is rewritten atomically; a last line torn by a kill is dropped, a bad line before it
        is an error naming the file. A resume that finds no file (a checkpoint copied without
        it) starts a new one, saying so."""
        if resume_step is not None and not self.path.exists() and resume_step > 0:
            print(
                f"note: {self.path} is missing; the records of steps 1-{resume_step} are lost, a new file starts here"
            )
        self.records = self._read_up_to(resume_step) if resume_step is not None and self.path.exists() else []
        with atomic_write(self.path) as f:
            f.write("".join(json.dumps(record) + "\n" for record in self.records).encode("utf-8"))

    def _read_up_to(self, step: int) -> list[dict]:
        return [record for record in read_metrics(self.path, "resume") if record["step"] <= step]

    def append(self, record: dict) -> None:
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: Path, purpose: str = "read it") -> list[dict]:
    """The records of a metrics.jsonl: a last line a kill cut short is dropped (saying so), a
    bad line before it is a ValueError naming the file and the line (repair it to `purpose`)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("no integer step")
        except ValueError as err:  # json.JSONDecodeError included
            if number == len(lines):  # the line a kill cut short
                print(f"note: {path}: dropped its last line, which was cut short")
                break
            raise ValueError(
                f"{path}: line {number} is not a metrics record ({type(err).__name__}: {err}); "
                f"repair or remove that line to {purpose}"
            ) from err
        records.append(record)
    return records


def step_record(step: int, lr: float, numbers: list[float], seconds: float, rate: StepRates) -> dict:
    """A step's metrics.jsonl record from its numbers as read back ([ranks stopping, loss,
    gradient norm before clipping, char encoder's share of its square]) and its own time."""
    _, loss, grad_norm, char_grad_share = numbers
    record = {"step": step, "lr": lr, "train_loss": loss, "tokens_per_s": rate.tokens_per_step / seconds}
    record["ms_per_step"] = 1000 * seconds
    record["grad_norm"] = grad_norm
    if rate.peak_flops:
        record["mfu"] = rate.flops_per_token * record["tokens_per_s"] / rate.peak_flops
    if rate.has_char:
        record["char_grad_share"] = char_grad_share
    return record


@dataclass(frozen=True)
class StepRates:
    """What turns a step's time into its rates: tokens per step (all ranks), the model's
    FLOPs per token, the peak FLOP/s of all ranks' devices (None: unknown, no MFU), and
    whether the model has a char encoder (whose gradient share is recorded)."""

    tokens_per_step: int
    flops_per_token: float
    peak_flops: float | None
    has_char: bool


def postfix(record: dict) -> str:
    """A record in the progress bar's few words."""
    text = (
        f"loss {record['train_loss']:.3f} | {record['tokens_per_s']:,.0f} tok/s | {record['ms_per_step']:.0f} ms/step"
    )
    if "mfu" in record:
        text += f" | mfu {100 * record['mfu']:.1f}%"
    if "val_loss" in record:
        text += f" | val {record['val_loss']:.3f}"
    return text
