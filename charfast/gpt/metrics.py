"""A run's metrics.jsonl: one JSON object per optimizer step, appended as the run goes."""

from __future__ import annotations

import json
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
