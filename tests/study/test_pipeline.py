"""The quick preset on a tiny corpus: every stage, the report, and reuse of finished stages."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from charfast.gpt.failures import RunFailed
from charfast.study import (
    analysis,
    cli,
    engines,
    pipeline,
    presets,
    records,
    stage_finetune,
    stage_pretrain,
    stage_probe,
)
from charfast.study import config as study_config
from charfast.study import report as report_module


def test_study_smoke_run_and_reuse(tiny_study, tmp_path, monkeypatch, capsys):
    assert cli.main(tiny_study) == 0
    root = tmp_path / "study"
    report = (root / "report.md").read_text(encoding="utf-8")
    rows = json.loads((root / "report.json").read_text(encoding="utf-8"))
    # The quick preset: 2 tokenizers x 4 tasks x 4 splits, each with the three archs over 2 seeds
    # and intervals around the differences.
    quick = presets.PRESETS["quick"]
    assert [r["tokenizer"] for r in rows["probe"]] == [t for t in quick.tokenizers for _ in range(3)]
    tasks = [r for r in rows["tasks"] if r["tokenizer"] == "bpe:300"]
    test_set = json.loads((root / "bpe_300" / "test_set.json").read_text(encoding="utf-8"))
    asked = {(q["task"], q["split"]) for q in test_set["questions"]}
    # Every question after the mixed fine-tuning; count's again after count alone.
    assert quick.solo_tasks == ("count",)
    assert {(r["task"], r["split"]) for r in tasks if r["finetuning"] == "mixed"} == asked
    assert {(r["task"], r["split"]) for r in tasks if r["finetuning"] == "then alone"} == {
        (t, s) for t, s in asked if t == "count"
    }
    assert {(t, s) for t in quick.tasks for s in ("train", "heldout", "nonce")} <= asked
    for r in tasks:
        assert r["seeds"] == 2 and r["n"] == 4 and set(r["exact_match"]) == set(presets.ARCHS)
        for control in ("baseline-matched", "char-shuffled"):
            low, estimate, high = sorted(r["difference"][control])
            assert r["difference"][control][0] == estimate and low <= estimate <= high
        assert r["chance"] == {"count": 0.25, "contains": 0.5}.get(r["task"], 0) and r["answer_loss"]["char"] > 0
    assert "| bpe:300 | spell | mixed | heldout | 4 x 2 | 0% |" in report
    assert "| bpe:300 | count | mixed | train | 4 x 2 | 25% |" in report
    assert "| bpe:300 | count | then alone | train | 4 x 2 | 25% |" in report
    # The probe: three probes, each arch scored with an interval, per seed, beside the majority baseline.
    assert [r["probe"] for r in rows["probe"]] == ["letters", "length", "first_letter"] * 2
    for r in rows["probe"]:
        assert set(r["score"]) == set(presets.ARCHS) and all(len(v) == 2 for v in r["per_seed"].values())
        assert 0 <= r["majority"] <= 1 and r["score"]["char"][1] <= r["score"]["char"][0] <= r["score"]["char"][2]
    # Learning curves at steps 0, 10 and 20 on the train, heldout and nonce splits, for each arch
    # and fine-tuning.
    curves = [r for r in rows["curves"] if r["tokenizer"] == "bpe:300"]
    assert {(r["arch"], r["split"], r["finetuning"]) for r in curves} == {
        (a, s, f) for a in presets.ARCHS for s in presets.CURVE_SPLITS for f in ("mixed", "then alone")
    }
    assert {r["task"] for r in curves if r["finetuning"] == "then alone"} == {"count"}
    assert all(r["steps"] == [0, 10, 20] and len(r["steps_to"]["50%"]) == 2 for r in curves)
    assert "## Spelling probe" in report and "steps to 50%" in report
    for png in ("loss_curves.png", "sweep.png", "learning_curves_bpe_300.png", "learning_curves_bpe_512.png"):
        assert (root / png).stat().st_size > 0
    assert (root / "bpe_300" / "splits" / "manifest.json").exists()
    assert len(test_set["questions"]) == 4 * len(asked)  # the tiny corpus has few rare words: some cells are empty
    run = root / "bpe_300" / "char-seed1"
    results = json.loads((run / "finetune" / "mixed" / "results.json").read_text(encoding="utf-8"))
    assert results["built_from"]["pretrain_step"] == 20 and len(results["built_from"]["pretrain_weights_sha256"]) == 64
    assert [p["step"] for p in results["learning_curve"]] == [0, 10, 20]
    alone = json.loads((run / "finetune" / "count" / "results.json").read_text(encoding="utf-8"))
    assert alone["finetune"]["tasks"] == ["count"] and {r["task"] for r in alone["after"]} == {"count"}
    # count alone starts from the mixed fine-tuning's weights, kept beside its results.
    weights = run / "finetune" / "mixed" / "weights.pt"
    assert alone["built_from"]["after_mixed_weights_sha256"] == records.weights_digest(weights)
    probe = json.loads((run / "probe.json").read_text(encoding="utf-8"))
    assert probe["built_from"] == {k: results["built_from"][k] for k in ("pretrain_step", "pretrain_weights_sha256")}
    # A second run reuses every finished stage: nothing trains or probes again, and the report
    # made from the same records is kept as it is.
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(stage_pretrain, "run_training", lambda config: pytest.fail("pretraining ran again"))
        patch.setattr(stage_finetune, "finetune", lambda *a, **k: pytest.fail("fine-tuning ran again"))
        patch.setattr(stage_probe, "probe_model", lambda *a, **k: pytest.fail("probed again"))
        patch.setattr(report_module, "plot_report", lambda *a, **k: pytest.fail("report made again"))
        assert cli.main(tiny_study) == 0
    assert f"unchanged: {root / 'report.md'} (made from the same records)" in capsys.readouterr().out
    # A lost solo result runs that fine-tuning again, from the kept mixed weights, and nothing else.
    (run / "finetune" / "count" / "results.json").unlink()
    tasks_trained = []
    original = stage_finetune.finetune
    with monkeypatch.context() as patch:
        patch.setattr(stage_finetune, "finetune", lambda *a, **k: tasks_trained.append(a[3].tasks) or original(*a, **k))
        assert cli.main(tiny_study) == 0
    assert tasks_trained == [("count",)]
    # A pretraining that changed (here: trained one step further) is never reused as it was:
    # exactly its fine-tuning runs again.
    pretrain = root / "bpe_300" / "char-seed1" / "pretrain"
    from charfast.gpt import train

    assert train.main(["--out-dir", str(pretrain), "--resume", "--max-steps", "21", "--no-progress"]) == 0
    ran = []
    monkeypatch.setattr(stage_finetune, "finetune", lambda *a, **k: ran.append(1) or original(*a, **k))
    capsys.readouterr()
    assert cli.main(tiny_study) == 0
    assert len(ran) == 2  # mixed and count alone, of 2 tokenizers x 2 seeds x 3 archs
    assert f"wrote {root / 'report.md'}" in capsys.readouterr().out  # from the new records
    results = json.loads((run / "finetune" / "mixed" / "results.json").read_text(encoding="utf-8"))
    alone = json.loads((run / "finetune" / "count" / "results.json").read_text(encoding="utf-8"))
    assert results["built_from"]["pretrain_step"] == 21
    assert alone["built_from"]["after_mixed_weights_sha256"] == records.weights_digest(weights)
    assert json.loads((run / "probe.json").read_text(encoding="utf-8"))["built_from"]["pretrain_step"] == 21


def test_kept_pretraining_steps_are_stages_of_their_own(tiny_study, tmp_path, monkeypatch, capsys):
    """The quick preset keeps its pretraining's weights at steps 5 and 10 and probes and
    fine-tunes from each; a changed choice of kept steps reruns only what depends on them
    (a step the run has passed comes from a run of its own to it: the same weights)."""
    one_run = ["--tokenizers", "bpe:300", "--seeds", "0", "--archs", "char", "baseline-matched"]
    assert cli.main(tiny_study + one_run) == 0
    root = tmp_path / "study"
    run = root / "bpe_300" / "char-seed0"
    kept = run / "pretrain" / "kept"
    assert sorted(p.name for p in kept.glob("*.pt")) == ["step10.pt", "step5.pt"]
    for step in (5, 10):
        probe = json.loads((run / f"at-step{step}" / "probe.json").read_text(encoding="utf-8"))
        mixed = json.loads((run / f"at-step{step}" / "finetune" / "mixed" / "results.json").read_text(encoding="utf-8"))
        assert probe["built_from"]["pretrain_step"] == mixed["pretrain_step"] == step
    report = (root / "report.md").read_text(encoding="utf-8")
    assert "## Pretraining length" in report and (root / "length_gap_bpe_300.png").stat().st_size > 0
    rows = json.loads((root / "report.json").read_text(encoding="utf-8"))
    assert {r["pretrain_step"] for r in rows["length_tasks"]} == {5, 10, 20}
    assert [r["pretrain_step"] for r in rows["compute_equivalent"]] == [5, 10, 20]
    weights_at_5 = (kept / "step5.pt").read_bytes()

    trained, tuned = [], []
    real_train, real_finetune = stage_pretrain.run_training, stage_finetune.finetune
    monkeypatch.setattr(stage_pretrain, "run_training", lambda config: trained.append(config) or real_train(config))
    monkeypatch.setattr(stage_finetune, "finetune", lambda *a, **k: tuned.append(1) or real_finetune(*a, **k))
    quick = presets.PRESETS["quick"]
    monkeypatch.setitem(presets.PRESETS, "quick", dataclasses.replace(quick, kept_steps=(5, 15)))
    assert cli.main(tiny_study + one_run) == 0
    # Only step 15 is new: one run of its own to it per arch, and its fine-tunings (mixed, count alone).
    assert [config.max_steps for config in trained] == [15, 15]
    assert len(tuned) == 2 * 2 and (kept / "step15.pt").exists()
    assert not list(kept.glob("run-to-step*"))  # the run of its own is gone once its weights are kept
    assert (kept / "step5.pt").read_bytes() == weights_at_5
    assert "| 15 (" in (root / "report.md").read_text(encoding="utf-8")


def test_a_pretraining_of_another_preset_is_never_continued(tiny_study, tmp_path, monkeypatch, capsys):
    one_run = ["--tokenizers", "bpe:300", "--seeds", "0", "--archs", "char"]
    args = cli.build_parser().parse_args(tiny_study + one_run)
    config = study_config.StudyConfig(
        out_dir=args.out_dir, preset="quick", tokenizers=("bpe:300",), seeds=(0,), archs=("char",), data=args.data
    )
    folder = stage_pretrain.pretrain(pipeline.Study(dataclasses.replace(config, device="cpu")), "bpe:300", "char", 0)
    before = (folder / "ckpt.pt").read_bytes()
    monkeypatch.setattr(
        stage_pretrain, "run_training", lambda config: pytest.fail("continued another preset's pretraining")
    )
    small = [*tiny_study[: tiny_study.index("--preset")], "--preset", "small", "--device", "cpu", *one_run]
    assert cli.main(small) == 2
    err = capsys.readouterr().err
    assert f"{folder} holds a pretraining with other settings" in err and "n_embd 32 there, 128 here" in err, err
    assert len(err.strip().splitlines()) == 1 and (folder / "ckpt.pt").read_bytes() == before


@pytest.mark.parametrize("code, expected", [(130, 130), (1, 1), (0, 1)], ids=["interrupted", "failed", "short"])
def test_an_unfinished_pretraining_stops_the_study(tiny_study, tmp_path, monkeypatch, capsys, code, expected):
    """Exit 0 with fewer steps than asked ("short") is caught by the step the checkpoint holds."""
    real_training = stage_pretrain.run_training

    def stopped_early(config):
        assert real_training(dataclasses.replace(config, max_steps=1)) == 0  # a real checkpoint, short of the preset's
        if code == 1:
            raise RunFailed("the train loss is nan at step 1")
        return code

    monkeypatch.setattr(stage_pretrain, "run_training", stopped_early)
    monkeypatch.setattr(stage_finetune, "finetune", lambda *a, **k: pytest.fail("fine-tuned an unfinished pretraining"))
    assert cli.main(tiny_study) == expected
    printed = capsys.readouterr()
    if code >= 128:  # a stop signal ends the study at once
        assert printed.err.strip().splitlines()[-1].startswith("charfast.study: error: pretraining")
    else:  # a failed stage: named, what waits for it skipped, no report without results
        assert "charfast.study: stage pretrain(bpe:300, char, 0) failed: RunFailed: pretraining" in printed.out
        assert "skipped" in printed.out and "no stage the report reads finished" in printed.out
    assert not list((tmp_path / "study").rglob("results.json"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tasks", "nope"], "unknown: ['nope']"),
        (["--tasks", "count", "count"], "--tasks names one twice"),
        (["--tasks", "spell", "count", "--solo-tasks", "contains"], "not among them: ['contains']"),
        (["--tasks", "count", "--solo-tasks", "count"], "with a single task the mixed fine-tuning"),
        (["--archs", "bytes"], "--archs must name some of"),
        (["--tokenizers", "bpe:300", "nope_base"], "unknown tokenizer 'nope_base'"),
        (["--tokenizers", "bpe:12"], "VOCAB must lie in [257, 16777216]"),
        (["--seeds", "-1"], "--seeds must be integers >= 0"),
        (["--seeds", "1", "1"], "must not repeat a value"),
        (["--jobs", "0"], "--jobs must be an integer >= 1"),
        (["--device", "bogus"], "--device: expected auto, cpu, cuda or cuda:N"),
        (["--data", "/nonexistent/corpus"], "--data: /nonexistent/corpus does not exist"),
        (["--out-dir", "FILE"], "exists and is not a folder"),
        (["--out-dir", ""], "--out-dir must name a folder, got ''"),
    ],
)
def test_bad_study_settings_are_refused_before_any_stage(tiny_study, tmp_path, monkeypatch, capsys, flags, message):
    (tmp_path / "FILE").write_text("not a folder")
    flags = [str(tmp_path / "FILE") if f == "FILE" else f for f in flags]
    monkeypatch.setattr(
        stage_pretrain, "run_training", lambda config: pytest.fail("a stage ran before the settings were checked")
    )
    assert cli.main(tiny_study + flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("charfast.study: error: ") and message in err and len(err.strip().splitlines()) == 1


def threads_of_this_process(config, stage):
    return torch.get_num_threads()


def test_jobs_spread_stages_over_processes_with_a_share_of_the_threads(tmp_path):
    study = pipeline.Study(study_config.StudyConfig(out_dir=str(tmp_path), preset="quick", jobs=2, device="cpu"))
    stages = study.stages()
    assert len([s for s in stages if s.kind == "pretrain"]) == 2 * 2 * 3  # tokenizers x seeds x archs
    outcome = engines.run_local(study.config, stages, threads_of_this_process)
    assert set(outcome.paths) == set(stages)
    assert set(outcome.paths.values()) == {max(1, torch.get_num_threads() // 2)}


@pytest.mark.slow
def test_a_narrowed_study_writes_the_report_that_fits_it(tiny_study, tmp_path):
    """One tokenizer, seed, arch and task is a normal choice: the report says what needs a
    baseline instead of crashing after every stage has run."""
    narrowed = ["--tokenizers", "bpe:300", "--seeds", "0", "--archs", "char", "--tasks", "spell"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "mean of empty slice", matplotlib's empty legend
        assert cli.main(tiny_study + narrowed) == 0
    root = tmp_path / "study"
    report = (root / "report.md").read_text(encoding="utf-8")
    assert "## What this study cannot say" in report
    assert "needs --archs to include char and baseline-matched" in report and "with one seed" in report
    assert not (root / "sweep.png").exists()  # the headline plot needs baseline-matched
    rows = json.loads((root / "report.json").read_text(encoding="utf-8"))
    assert len(rows["not_made"]) == 3 and rows["compute_equivalent"] == []
    assert {r["task"] for r in rows["tasks"]} == {"spell"} and all(r["difference"] == {} for r in rows["tasks"])


def test_the_compute_equivalent_gain_needs_baseline_matched_runs():
    curve = (np.array([1.0, 2.0, 4.0]), np.array([5.0, 4.0, 3.0]))
    assert analysis.compute_equivalent_rows({("bpe:300", "char", 0): curve}, {"bpe:300": [2, 4]}) == []
    paired = {("bpe:300", "char", 0): curve, ("bpe:300", "baseline-matched", 0): curve}
    rows = analysis.compute_equivalent_rows(paired, {"bpe:300": [2, 4]})
    assert [r["gain"] for r in rows] == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]


def test_log_puts_every_training_stage_in_tensorboard_and_the_report_once(tiny_study, tmp_path, monkeypatch, capsys):
    """--log tensorboard: one TensorBoard run per pretraining and fine-tuning, in its stage's
    folder (`tensorboard --logdir OUT_DIR` names them by tokenizer, arch, seed and step), and
    the report's task table once; the trackers are in no stage's identity."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    narrowed = ["--tokenizers", "bpe:300", "--seeds", "0", "--archs", "char", "--tasks", "spell", "count"]
    assert cli.main([*tiny_study, *narrowed, "--solo-tasks", "count", "--log", "tensorboard"]) == 0
    root = tmp_path / "study"
    runs = EventMultiplexer(size_guidance={"scalars": 0, "tensors": 0}).AddRunsFromDirectory(str(root))
    runs.Reload()
    run = "bpe_300/char-seed0"
    trainings = {f"{run}/pretrain/tb"} | {
        f"{run}/{at}finetune/{name}/tb" for at in ("", "at-step5/", "at-step10/") for name in ("mixed", "count")
    }
    assert set(runs.Runs()) == trainings | {"report/tb"}
    metrics = [json.loads(line) for line in (root / run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in runs.Scalars(f"{run}/pretrain/tb", "train/loss")] == [r["step"] for r in metrics]
    results = json.loads((root / run / "finetune" / "mixed" / "results.json").read_text(encoding="utf-8"))
    losses = [(e.step, e.value) for e in runs.Scalars(f"{run}/finetune/mixed/tb", "train/loss")]
    assert losses == [(r["step"], np.float32(r["train_loss"])) for r in results["finetune_curve"]]
    curve = [(e.step, e.value) for e in runs.Scalars(f"{run}/finetune/mixed/tb", "exact_match/spell|heldout")]
    expected = [(p["step"], np.float32(p["exact_match"]["spell|heldout"])) for p in results["learning_curve"]]
    assert curve == expected
    (summary,) = runs.Tensors("report/tb", "report/tasks/text_summary")
    assert summary.tensor_proto.string_val[0].decode().startswith("## Tasks after fine-tuning")
    # The trackers are run control: a rerun without them reuses every stage and the report.
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(stage_pretrain, "run_training", lambda config: pytest.fail("pretraining ran again"))
        patch.setattr(stage_finetune, "finetune", lambda *a, **k: pytest.fail("fine-tuning ran again"))
        assert cli.main([*tiny_study, *narrowed, "--solo-tasks", "count"]) == 0
    assert "unchanged:" in capsys.readouterr().out
