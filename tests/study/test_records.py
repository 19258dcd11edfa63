"""The study's records: a stage is reused only when what it was built from is unchanged
and every file it wrote is as written; the corpus is known by content, the weights by
digest, the report's code by what it imports."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from tiny_runs import write_tiny_corpus

from charfast.gpt.failures import RunFailed
from charfast.study import analysis, cli, pipeline, presets, records, stage_finetune, stage_pretrain, stage_probe
from charfast.study import config as study_config
from charfast.study import report as report_module

# One tokenizer, seed and arch, one kept step, two tasks with count alone after the mixed
# fine-tuning: every kind of record (kept weights, splits, probe, mixed weights, solo, report).
NARROWED = ["--tokenizers", "bpe:300", "--seeds", "0", "--archs", "char", "--tasks", "spell", "count"]


def _short_quick():
    return dataclasses.replace(
        presets.PRESETS["quick"], pretrain_steps=10, kept_steps=(5,), finetune_steps=4, solo_steps=4
    )


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A finished narrowed study, built once; each test works on a copy of it."""
    base = tmp_path_factory.mktemp("records")
    corpus = write_tiny_corpus(base / "corpus", chars_per_doc=30_000)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHARFAST_CACHE", str(base / "cache"))
        patch.setitem(presets.PRESETS, "quick", _short_quick())
        flags = ["--out-dir", str(base / "study"), "--data", str(corpus), "--preset", "quick", "--device", "cpu"]
        assert cli.main([*flags, *NARROWED, "--solo-tasks", "count"]) == 0
    return base


@pytest.fixture
def study(finished_study, tmp_path, monkeypatch):
    """(flags of a rerun, the study folder, the corpus folder) on a copy of the finished study."""
    shutil.copytree(finished_study, tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("CHARFAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(presets.PRESETS, "quick", _short_quick())
    flags = ["--out-dir", str(tmp_path / "study"), "--data", str(tmp_path / "corpus"), "--preset", "quick"]
    return [*flags, "--device", "cpu", *NARROWED, "--solo-tasks", "count"], tmp_path / "study", tmp_path / "corpus"


class Ran:
    """Which stages did work in a rerun: pretrainings, fine-tunings (by tasks), probes."""

    def __init__(self, monkeypatch):
        self.trained, self.tuned, self.probed = [], [], []
        real_train, real_finetune, real_probe = (
            stage_pretrain.run_training,
            stage_finetune.finetune,
            stage_probe.probe_model,
        )
        monkeypatch.setattr(stage_pretrain, "run_training", lambda c: self.trained.append(c) or real_train(c))
        monkeypatch.setattr(
            stage_finetune, "finetune", lambda *a, **k: self.tuned.append(a[3].tasks) or real_finetune(*a, **k)
        )
        monkeypatch.setattr(stage_probe, "probe_model", lambda *a, **k: self.probed.append(1) or real_probe(*a, **k))

    def nothing(self) -> bool:
        return not (self.trained or self.tuned or self.probed)


def _flip_a_bit(path, offset_from_end=200):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset_from_end is None else -offset_from_end] ^= 0x10
    path.write_bytes(bytes(data))


def _damage(path, damage: str, offset_from_end=200) -> None:
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        _flip_a_bit(path, offset_from_end)


def _damage_lines(out: str, path) -> list[str]:
    return [line for line in out.splitlines() if str(path) in line and " is damaged" in line]


def test_an_unchanged_study_reuses_every_stage(study, monkeypatch, capsys):
    flags, root, _ = study
    ran = Ran(monkeypatch)
    assert cli.main(flags) == 0
    assert ran.nothing() and "unchanged:" in capsys.readouterr().out


def test_a_corpus_changed_under_the_same_path_is_refused(study, monkeypatch, capsys):
    flags, root, corpus = study
    first = sorted(corpus.iterdir())[0]
    first.write_text(first.read_text(encoding="utf-8").replace("the", "teh"), encoding="utf-8")
    ran = Ran(monkeypatch)
    assert cli.main(flags) == 2
    err = capsys.readouterr().err
    assert "is not the one --data holds now" in err and len(err.strip().splitlines()) == 1, err
    assert ran.nothing()


def test_the_same_corpus_by_another_path_is_the_same_study(study, monkeypatch, capsys):
    flags, root, corpus = study
    monkeypatch.chdir(corpus.parent)
    relative = [os.path.relpath(corpus) if f == str(corpus) else f for f in flags]
    assert relative != flags
    ran = Ran(monkeypatch)
    assert cli.main(relative) == 0
    assert ran.nothing() and "unchanged:" in capsys.readouterr().out
    # Moved elsewhere (as another node mounts it): still the same corpus, by content.
    moved = corpus.parent / "elsewhere"
    corpus.rename(moved)
    assert cli.main([str(moved) if f == str(corpus) else f for f in flags]) == 0
    assert ran.nothing()


@pytest.mark.parametrize("damage", ["flipped bit", "truncated"])
def test_damaged_pretrained_weights_are_trained_again_not_used(study, monkeypatch, capsys, damage):
    flags, root, _ = study
    run = root / "bpe_300" / "char-seed0"
    ckpt = run / "pretrain" / "ckpt.pt"
    probe_before = json.loads((run / "probe.json").read_text(encoding="utf-8"))
    _damage(ckpt, damage, offset_from_end=None)
    ran = Ran(monkeypatch)
    assert cli.main(flags) == 0
    out = capsys.readouterr().out
    assert len(_damage_lines(out, ckpt)) == 1, out
    assert (run / "pretrain" / "ckpt.pt.damaged").exists()  # set aside, never deleted
    assert [c.max_steps for c in ran.trained] == [10]
    # Trained again to the same weights (runs are deterministic): what was built on them stands.
    assert json.loads((run / "probe.json").read_text(encoding="utf-8"))["built_from"] == probe_before["built_from"]
    assert not ran.tuned and not ran.probed


@pytest.mark.parametrize("damage", ["flipped bit", "truncated"])
def test_damaged_kept_weights_are_kept_again(study, monkeypatch, capsys, damage):
    flags, root, _ = study
    kept = root / "bpe_300" / "char-seed0" / "pretrain" / "kept" / "step5.pt"
    _damage(kept, damage)
    ran = Ran(monkeypatch)
    assert cli.main(flags) == 0
    out = capsys.readouterr().out
    assert len(_damage_lines(out, kept)) == 1, out
    assert [c.max_steps for c in ran.trained] == [5]  # a run of its own to step 5
    assert not ran.tuned  # the same weights again: the fine-tunings built on them stand


@pytest.mark.parametrize("damage", ["flipped bit", "truncated"])
def test_damaged_mixed_weights_are_fine_tuned_again(study, monkeypatch, capsys, damage):
    flags, root, _ = study
    weights = root / "bpe_300" / "char-seed0" / "finetune" / "mixed" / "weights.pt"
    _damage(weights, damage)
    ran = Ran(monkeypatch)
    assert cli.main(flags) == 0
    out = capsys.readouterr().out
    assert len(_damage_lines(out, weights)) == 1, out
    assert ran.tuned == [("spell", "count")] and not ran.trained  # count alone reads the same weights again


def test_a_reader_refuses_a_file_damaged_after_its_stage(study):
    _, root, _ = study
    folder = root / "bpe_300" / "char-seed0" / "finetune" / "mixed"
    _flip_a_bit(folder / "weights.pt")
    with pytest.raises(RunFailed, match="weights.pt is missing or damaged"):
        records.verified(folder / "weights.pt", folder / "results.json")


@pytest.mark.parametrize("record", ["probe.json", "finetune/mixed/results.json", "test_set.json"])
def test_a_record_changed_after_its_stage_is_rebuilt_not_read(study, monkeypatch, capsys, record):
    """A flipped digit still parses: the record's own digest finds it, its stage runs again
    (to the same record: the report is unchanged), nothing else does."""
    flags, root, _ = study
    path = (root / "bpe_300" / record) if record == "test_set.json" else (root / "bpe_300" / "char-seed0" / record)
    text = path.read_text(encoding="utf-8")
    digit = next(i for i, ch in enumerate(text) if ch.isdigit() and i > len(text) // 3)
    path.write_text(text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1 :], encoding="utf-8")
    ran = Ran(monkeypatch)
    assert cli.main(flags) == 0
    out = capsys.readouterr().out
    assert f"charfast.study: {path} is damaged (its content differs from its digest)" in out, out
    assert not ran.trained and len(ran.tuned) == (1 if record.startswith("finetune") else 0)
    assert len(ran.probed) == (1 if record == "probe.json" else 0)
    assert records.read_record(path)["built_from"] == json.loads(text)["built_from"]  # written again, whole


def test_a_damaged_split_is_frozen_again(study, monkeypatch, capsys):
    flags, root, _ = study
    split = root / "bpe_300" / "splits" / "heldout.json"
    split.write_text(split.read_text(encoding="utf-8").replace('"', "'", 2), encoding="utf-8")
    assert cli.main(flags) == 0
    assert f"{split}: SHA-256 does not match" in capsys.readouterr().out


def test_old_records_without_file_digests_are_verified_by_loading_then_adopted(study, monkeypatch, capsys):
    """Study folders written before records listed their files keep being reused."""
    flags, root, _ = study
    run = root / "bpe_300" / "char-seed0"
    for record in [run / "finetune" / "mixed" / "results.json", run / "pretrain" / "kept" / "step5.json"]:
        saved = json.loads(record.read_text(encoding="utf-8"))
        del saved["files"], saved["sha256"]  # as records were written before they listed files
        record.write_text(json.dumps(saved), encoding="utf-8")
    ran = Ran(monkeypatch)
    assert cli.main(flags) == 0 and ran.nothing()
    assert "weights.pt" in json.loads((run / "finetune" / "mixed" / "results.json").read_text())["files"]


def test_the_reports_digest_follows_every_module_it_imports(tmp_path, monkeypatch):
    names = records.source_modules("charfast.study.report")
    for module in ("tasks", "probe", "words", "layout", "analysis", "plots", "stats"):
        assert f"charfast.study.{module}" in names
    # A module reached only through another's imports changes the digest.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "report.py").write_text("from pkg.analysis import rows\n")
    (package / "analysis.py").write_text("from .tasks import CHANCE\nrows = []\n")
    (package / "tasks.py").write_text("CHANCE = 0.25\n")
    script = "import sys; from charfast.study.records import source_digest; print(source_digest('pkg.report', 'pkg'))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def digest() -> str:
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True).stdout

    before = digest()
    (package / "tasks.py").write_text("CHANCE = 0.5\n")
    assert len(before.strip()) == 64 and digest() != before


def test_the_report_is_made_again_when_its_code_changes(study, monkeypatch, capsys):
    flags, root, _ = study
    monkeypatch.setattr(report_module, "source_digest", lambda module: "another version of the code")
    # The pretrainings' settings come from their run.json: no checkpoint is read for them.
    monkeypatch.setattr(report_module, "load_checkpoint", lambda path: pytest.fail(f"read {path}"))
    assert cli.main(flags) == 0
    assert f"wrote {root / 'report.md'}" in capsys.readouterr().out


def _result(arch: str, seed: int, correct: list[float]) -> dict:
    after = [{"task": "spell", "split": "heldout", "correct": c, "answer_loss": 1.0} for c in correct]
    curve = [{"step": 0, "exact_match": {"spell|heldout": 0.0}}]
    return dict(tokenizer="bpe:300", arch=arch, seed=seed, finetuning="mixed", n_vocab=300, after=after,
                learning_curve=curve, built_from={"pretrain_step": 10})  # fmt: skip


def _probe(arch: str, seed: int) -> dict:
    probe = {name: {"score": [1.0, 0.0, 1.0], "majority": [0.5]} for name in analysis.PROBES}
    return dict(tokenizer="bpe:300", arch=arch, seed=seed, n_vocab=300, probe=probe, built_from={"pretrain_step": 10})


@pytest.mark.parametrize("archs", [["baseline-matched"], ["char-shuffled", "baseline"], ["baseline"]])
def test_any_narrowing_of_archs_reports_its_rows(archs):
    results = [_result(arch, seed, [1.0, 0.0]) for arch in archs for seed in (0, 1)]
    (row,) = analysis.task_rows(results)
    assert set(row["exact_match"]) == set(archs) and row["n"] == 2 and row["seeds"] == 2
    probes = analysis.probe_rows([_probe(arch, seed) for arch in archs for seed in (0, 1)])
    assert len(probes) == len(analysis.PROBES) and all(set(r["score"]) == set(archs) for r in probes)
    table = report_module.task_table([row])
    assert all(arch in table for arch in archs) and "| bpe:300 | spell |" in table


def test_a_stage_that_did_not_finish_leaves_its_cells_not_run():
    """The report covers the stages that finished: char's solo count fine-tuning finished,
    baseline-matched's did not (failed, or the study is still running)."""
    results = [_result(arch, seed, [1.0, 0.0]) for arch in ("char", "baseline-matched") for seed in (0, 1)]
    results.append({**_result("char", 0, [1.0, 1.0]), "finetuning": "count"})
    rows = analysis.task_rows(results)
    assert [set(r["exact_match"]) for r in rows] == [{"char", "baseline-matched"}, {"char"}]
    table = report_module.task_table(rows)
    assert "| spell | then alone | heldout | 2 x 1 | 0% | 100.0% | not run |" in table
    on_train_words = [{**r, "split": "train"} for r in rows]
    assert report_module.learned_summary(on_train_words).splitlines()[2:] == [
        "- bpe:300, char: 1 of 1: spell (100%, then alone)",
        "- bpe:300, baseline-matched: 0 of 1: none",
    ]
    # baseline-matched's seed 1 has not finished its mixed fine-tuning either: the cells average
    # one seed for it and two for char, and the table says so.
    rows = analysis.task_rows([r for r in results if (r["arch"], r["seed"]) != ("baseline-matched", 1)])
    assert "| spell | mixed | heldout | 2 x 1-2 | 0% | 50.0% | 50.0% | n/a |" in report_module.task_table(rows)


def test_a_probe_or_fine_tuning_reads_its_checkpoint_once(study, monkeypatch):
    """Its identity, its tokenizer and its model come from one read (no Trainer: no optimizer
    state, no tokenized corpus)."""
    flags, root, _ = study
    run = root / "bpe_300" / "char-seed0"
    config = study_config.StudyConfig(
        out_dir=str(root), preset="quick", tokenizers=("bpe:300",), seeds=(0,), archs=("char",),
        tasks=("spell", "count"), solo_tasks=("count",), data=flags[flags.index("--data") + 1], device="cpu",
    )  # fmt: skip
    study = pipeline.Study(config)
    stages = {stage.name: stage for stage in study.stages()}
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(str(f)) or real_load(f, *a, **k))
    ckpt = str(run / "pretrain" / "ckpt.pt")
    for stage, record in [("probe(bpe:300, char, 0, 10)", "probe.json"), ("finetune(bpe:300, char, 0, 10, count)",
                          "finetune/count/results.json")]:  # fmt: skip
        (run / record).unlink()
        reads.clear()
        assert study.run_stage(stages[stage]) == run / record
        assert reads.count(ckpt) == 1, (stage, reads)


def test_a_pretraining_log_cut_short_is_read_as_training_reads_it(study, capsys):
    """The report reads a pretraining's metrics.jsonl as a resume does: a last line cut short
    is dropped, saying so; a bad line before it names the file and the line."""
    flags, root, _ = study
    metrics = root / "bpe_300" / "char-seed0" / "pretrain" / "metrics.jsonl"
    text = metrics.read_text(encoding="utf-8")
    metrics.write_text(text[: len(text) - 20], encoding="utf-8")
    assert cli.main(flags) == 0
    out = capsys.readouterr().out
    assert f"note: {metrics}: dropped its last line, which was cut short" in out and "wrote " in out
    lines = text.splitlines()
    metrics.write_text("\n".join([lines[0], "{not json", *lines[2:]]) + "\n", encoding="utf-8")
    assert cli.main(flags) == 2
    err = capsys.readouterr().err
    assert f"{metrics}: line 2 is not a metrics record" in err and "to make the report" in err
    assert len(err.strip().splitlines()) == 1
