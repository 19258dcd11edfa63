"""A new experiment tracker is one Tracker subclass, registered under its --log name: it
gets every metrics.jsonl record, the samples and a flush before each checkpoint, and
through the checkpoint what it needs to continue its run on --resume."""

from __future__ import annotations

import json

from tiny_runs import read_metrics, tiny_flags

from charfast.gpt import tracking, train
from charfast.gpt.checkpoint import load_checkpoint


class JsonLinesTracker(tracking.Tracker):
    """A toy tracker: one JSON line per call into <run folder>/toy.jsonl."""

    resume_keys = ("toy_run_id",)

    def __init__(self, run: tracking.TrackedRun):
        super().__init__(run)
        self.run_id = run.resume_state.get("toy_run_id", f"toy-{run.resume_step or 0}")
        self.file = open(run.folder / "toy.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._write(
            "start", {"run_id": self.run_id, "resume_step": run.resume_step, "seed": run.hyperparameters["seed"]}
        )

    def _write(self, kind: str, payload: dict) -> None:
        self.file.write(json.dumps({"kind": kind, **payload}) + "\n")

    def log(self, step: int, values: dict[str, float]) -> None:
        self._write("log", {"step": step, "values": values})

    def text(self, tag: str, text: str, step: int) -> None:
        self._write("text", {"tag": tag, "step": step})

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self._write("close", {})
        self.file.close()

    def resume_state(self) -> dict:
        return {"toy_run_id": self.run_id}


def test_a_tracker_defined_here_logs_a_run_and_continues_it_on_resume(tiny_corpus, tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "TRACKERS", dict(tracking.TRACKERS))  # the registration ends with the test
    tracking.register_tracker("toy")(JsonLinesTracker)
    out = tmp_path / "run"
    flags = tiny_flags(tiny_corpus, out, tiny_cache, eval_interval=2, sample_tokens=4)
    assert train.main([*flags, "--max-steps", "4", "--log", "toy"]) == 0
    assert load_checkpoint(out / "ckpt.pt")["toy_run_id"] == "toy-0"
    assert train.main([*flags, "--max-steps", "6", "--resume", "--log", "toy"]) == 0
    lines = [json.loads(line) for line in (out / "toy.jsonl").read_text(encoding="utf-8").splitlines()]
    starts = [line for line in lines if line["kind"] == "start"]
    assert starts == [
        {"kind": "start", "run_id": "toy-0", "resume_step": None, "seed": 1337},
        {"kind": "start", "run_id": "toy-0", "resume_step": 4, "seed": 1337},  # the run id came back
    ]
    logged = [(line["step"], line["values"]["train/loss"]) for line in lines if line["kind"] == "log"]
    assert logged == [(r["step"], r["train_loss"]) for r in read_metrics(out)]
    assert [line["step"] for line in lines if line["kind"] == "text"] == [2, 4, 6]
    assert [line["kind"] for line in lines].count("close") == 2
