"""benchmarks/conftest.py's interleaved timing: every step runs first equally often, so
whatever running first (or after another step) costs lands on no one side of a ratio."""

import importlib.util
from collections import Counter
from pathlib import Path

CONFTEST = Path(__file__).resolve().parents[2] / "benchmarks" / "conftest.py"


def _benchmarks_conftest(monkeypatch):
    monkeypatch.syspath_prepend(str(CONFTEST.parent))  # it imports its sibling modules
    spec = importlib.util.spec_from_file_location("benchmarks_conftest", CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_step_runs_first_equally_often_and_every_round_runs_all(monkeypatch):
    conftest = _benchmarks_conftest(monkeypatch)
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("baseline", "char", "other")}
    times = conftest.interleaved_times(steps, rounds=6, warmup=3)
    assert all(len(values) == 6 for values in times.values())
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 9 and all(sorted(r) == ["baseline", "char", "other"] for r in rounds)
    counted = rounds[3:]  # after the warmup
    assert Counter(r[0] for r in counted) == {"baseline": 2, "char": 2, "other": 2}
    assert Counter(r[-1] for r in counted) == {"baseline": 2, "char": 2, "other": 2}
