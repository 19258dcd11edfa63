"""A run's metrics.jsonl: one JSON object per optimizer step, appended as the run goes."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """metrics.jsonl at `path`; `records` holds every record of the run, resumed ones included."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict] = []

    def start(self, resume_step: int | None) -> None:
        """A fresh file for a new run; when resuming at `resume_step`, keep the lines up to it
        (a killed run may have logged steps after its last checkpoint)."""
        kept = []
        if resume_step is not None and self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= resume_step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.records = [json.loads(line) for line in kept]

    def append(self, record: dict) -> None:
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
