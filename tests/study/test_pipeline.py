"""A study smoke run at tiny size: every stage, the report, and reuse of finished stages."""

import json

import pytest
from tiny_runs import write_tiny_corpus

from charfast.study import cli, pipeline

TINY = dict(
    pretrain_steps=3,
    finetune_steps=3,
    finetune_batch=4,
    finetune_lr=1e-3,
    examples_per_cell=3,
    train_flags=(
        "--tokenizer",
        "bpe:300",
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-embd",
        "16",
        "--block-size",
        "96",
        "--batch-size",
        "4",
        "--char-dim",
        "8",
        "--char-hidden",
        "8",
        "--eval-interval",
        "3",
        "--eval-iters",
        "1",
        "--no-progress",
    ),
)


@pytest.fixture
def tiny_study(tmp_path, monkeypatch):
    corpus = write_tiny_corpus(tmp_path / "corpus", chars_per_doc=30_000)
    monkeypatch.setitem(pipeline.PRESETS, "small", TINY)
    monkeypatch.setenv("CHARFAST_CACHE", str(tmp_path / "cache"))
    return [
        "--out-dir",
        str(tmp_path / "study"),
        "--data",
        str(corpus),
        "--seeds",
        "0",
        "1",
        "--tasks",
        "reverse",
        "count",
        "--tokenizers",
        "bpe:300",
        "--device",
        "cpu",
    ]


def test_study_smoke_run_and_reuse(tiny_study, tmp_path, monkeypatch, capsys):
    assert cli.main(tiny_study) == 0
    root = tmp_path / "study"
    report = (root / "report.md").read_text(encoding="utf-8")
    rows = json.loads((root / "report.json").read_text(encoding="utf-8"))
    # 2 tasks x 4 splits, each with both archs over 2 seeds and an interval around the difference.
    assert {(r["task"], r["split"]) for r in rows} == {(t, s) for t in ("count", "reverse") for s in pipeline.SPLITS}
    for r in rows:
        assert r["seeds"] == 2 and r["n"] == 3 and r["low"] <= r["diff"] <= r["high"]
        assert 0 <= r["acc_char"] <= 1 and r["loss_char"] > 0
    assert "| bpe:300 | reverse | heldout |" in report
    for png in ("loss_curves.png", "accuracy_bpe_300.png"):
        assert (root / png).stat().st_size > 0
    assert (root / "bpe_300" / "splits" / "manifest.json").exists()
    test_set = json.loads((root / "bpe_300" / "test_set.json").read_text(encoding="utf-8"))
    assert len(test_set) == 2 * 4 * 3
    # A second run reuses every finished stage: nothing trains again.
    monkeypatch.setattr(pipeline.train, "main", lambda flags: pytest.fail("pretraining ran again"))
    monkeypatch.setattr(pipeline, "finetune", lambda *a, **k: pytest.fail("fine-tuning ran again"))
    assert cli.main(tiny_study) == 0


def test_bad_study_settings(tiny_study, capsys):
    assert cli.main(tiny_study + ["--tasks", "nope"]) == 2
    assert "unknown: ['nope']" in capsys.readouterr().err
