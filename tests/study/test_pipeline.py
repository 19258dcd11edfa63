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
    assert len(test_set["questions"]) == 2 * 4 * 3
    results = json.loads((root / "bpe_300" / "char-seed1" / "finetune" / "results.json").read_text(encoding="utf-8"))
    assert results["built_from"]["pretrain_step"] == 3 and len(results["built_from"]["pretrain_sha256"]) == 64
    # A second run reuses every finished stage: nothing trains again.
    with monkeypatch.context() as patch:
        patch.setattr(pipeline.train, "main", lambda flags: pytest.fail("pretraining ran again"))
        patch.setattr(pipeline, "finetune", lambda *a, **k: pytest.fail("fine-tuning ran again"))
        assert cli.main(tiny_study) == 0
    # A pretraining that changed (here: trained one step further) is never reused as it was:
    # exactly its fine-tuning runs again.
    pretrain = root / "bpe_300" / "char-seed1" / "pretrain"
    from charfast.gpt import train

    assert train.main(["--out-dir", str(pretrain), "--resume", "--max-steps", "4", "--no-progress"]) == 0
    ran = []
    original = pipeline.finetune
    monkeypatch.setattr(pipeline, "finetune", lambda *a, **k: ran.append(1) or original(*a, **k))
    assert cli.main(tiny_study) == 0
    assert len(ran) == 1
    results = json.loads((root / "bpe_300" / "char-seed1" / "finetune" / "results.json").read_text(encoding="utf-8"))
    assert results["built_from"]["pretrain_step"] == 4


@pytest.mark.parametrize("code, expected", [(130, 130), (1, 1), (0, 1)], ids=["interrupted", "failed", "short"])
def test_an_unfinished_pretraining_stops_the_study(tiny_study, tmp_path, monkeypatch, capsys, code, expected):
    """Exit 0 with fewer steps than asked ("short") is caught by the step the checkpoint holds."""
    real_main = pipeline.train.main

    def stopped_early(flags):
        flags = [*flags]
        flags[flags.index("--max-steps") + 1] = "1"
        assert real_main(flags) == 0  # a real checkpoint, one step short of the preset's 3
        return code

    monkeypatch.setattr(pipeline.train, "main", stopped_early)
    monkeypatch.setattr(pipeline, "finetune", lambda *a, **k: pytest.fail("fine-tuned an unfinished pretraining"))
    assert cli.main(tiny_study) == expected
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("charfast.study: error: pretraining")
    assert not list((tmp_path / "study").rglob("results.json"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tasks", "nope"], "unknown: ['nope']"),
        (["--tasks", "count", "count"], "--tasks names one twice"),
        (["--archs", "bytes"], "--archs must name some of"),
        (["--tokenizers", "bpe:300", "nope_base"], "unknown tokenizer 'nope_base'"),
        (["--tokenizers", "bpe:12"], "vocab_size must be an int >= 257"),
        (["--seeds", "-1"], "--seeds must be integers >= 0"),
        (["--seeds", "1", "1"], "must not repeat a value"),
        (["--device", "bogus"], "--device: expected auto, cpu, cuda or cuda:N"),
        (["--data", "/nonexistent/corpus"], "--data: /nonexistent/corpus does not exist"),
        (["--out-dir", "FILE"], "exists and is not a folder"),
    ],
)
def test_bad_study_settings_are_refused_before_any_stage(tiny_study, tmp_path, monkeypatch, capsys, flags, message):
    (tmp_path / "FILE").write_text("not a folder")
    flags = [str(tmp_path / "FILE") if f == "FILE" else f for f in flags]
    monkeypatch.setattr(
        pipeline.train, "main", lambda flags: pytest.fail("a stage ran before the settings were checked")
    )
    assert cli.main(tiny_study + flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("charfast.study: error: ") and message in err and len(err.strip().splitlines()) == 1
