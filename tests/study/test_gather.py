"""A study run in pieces (a seed per host or session), its records gathered into one folder
without the weights and reported as one study; records that do not belong are refused."""

import json
import shutil

import pytest

from charfast.study import cli
from charfast.study.records import RECORD_DIGEST, read_json, write_record

NARROW = ["--tokenizers", "bpe:300", "--archs", "char", "baseline-matched"]


def _report(folder):
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_seeds_run_apart_are_gathered_into_one_report(tiny_study, tmp_path, capsys):
    pieces = [tmp_path / "seed0", tmp_path / "seed1"]
    for seed, piece in enumerate(pieces):
        assert cli.main([*tiny_study, *NARROW, "--seeds", str(seed), "--out-dir", str(piece)]) == 0
    gathered = tmp_path / "gathered"
    gather = [*tiny_study, *NARROW, "--out-dir", str(gathered), "--gather"]
    capsys.readouterr()
    assert cli.main([*gather, *map(str, pieces)]) == 0
    # Per run (2 archs x 2 seeds): at each of 3 pretraining points (steps 5, 10, 20) probe.json
    # and the mixed and count-alone results; the pretraining's metrics.jsonl and run.json.
    assert f"gathered {2 * 2 * (3 * 3 + 2)} file(s) into {gathered}" in capsys.readouterr().out
    files = _files(gathered)
    assert not [f for f in files if f.suffix == ".pt"]  # no weights travel
    assert {f.name for f in files} >= {"probe.json", "results.json", "metrics.jsonl", "run.json", "report.md"}

    # Each seed's numbers are those its own piece reported, side by side, as one study's.
    tasks = _report(gathered)["tasks"]
    alone = [{(r["task"], r["finetuning"], r["split"]): r for r in _report(piece)["tasks"]} for piece in pieces]
    assert tasks and {(r["task"], r["finetuning"], r["split"]) for r in tasks} == set(alone[0])
    for row in tasks:
        key = (row["task"], row["finetuning"], row["split"])
        assert row["seeds"] == 2
        for arch in ("char", "baseline-matched"):
            per_seed = [alone[seed][key]["exact_match_per_seed"][arch][0] for seed in (0, 1)]
            assert row["exact_match_per_seed"][arch] == per_seed
    probes = _report(gathered)["probe"]
    assert [len(r["per_seed"]["char"]) for r in probes] == [2] * len(probes)

    # Gathering the same pieces again copies nothing, and the report made from the same records stays.
    capsys.readouterr()
    assert cli.main([*gather, *map(str, pieces)]) == 0
    out = capsys.readouterr().out
    assert "gathered 0 file(s)" in out and "unchanged:" in out
    before = {f: (gathered / f).read_bytes() for f in _files(gathered)}

    # A record of other settings (here: twice the learning rate) is refused, naming what differs.
    other = tmp_path / "other"
    shutil.copytree(pieces[1], other)
    results = other / "bpe_300" / "char-seed1" / "finetune" / "mixed" / "results.json"
    record = read_json(results)
    record["built_from"]["finetune"]["lr"] *= 2
    fields = {k: v for k, v in record.items() if k not in ("built_from", "files", RECORD_DIGEST)}
    write_record(results, fields, record["built_from"], [results.parent / name for name in record["files"]])
    fresh = tmp_path / "fresh"
    assert cli.main([*tiny_study, *NARROW, "--out-dir", str(fresh), "--gather", str(pieces[0]), str(other)]) == 1
    err = capsys.readouterr().err
    assert f"{results} is not a record of finetune(bpe:300, char, 1, 20, mixed)" in err and "differs in finetune" in err
    assert not fresh.exists() or _files(fresh) == []  # a refused gathering copies nothing

    # Two different runs of one stage: the report may read one of them only.
    twin = tmp_path / "twin"
    shutil.copytree(pieces[1], twin)
    with open(twin / "bpe_300" / "char-seed1" / "pretrain" / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 21}\n')
    assert cli.main([*gather, str(twin)]) == 1
    assert "differ: two runs of one stage" in capsys.readouterr().err

    # A run not finished in a piece (its count-alone fine-tuning is missing) is left whole: its
    # weights do not travel, so it runs again, all of it, in another piece.
    partial = tmp_path / "partial"
    shutil.copytree(pieces[1], partial)
    (partial / "bpe_300" / "char-seed1" / "finetune" / "count" / "results.json").unlink()
    one_run = tmp_path / "one_run"
    assert cli.main([*tiny_study, *NARROW, "--seeds", "1", "--out-dir", str(one_run), "--gather", str(partial)]) == 0
    out = capsys.readouterr().out
    assert "gathered 11 file(s)" in out and "1 unfinished run(s) left" in out
    assert not (one_run / "bpe_300" / "char-seed1").exists()
    assert "| bpe:300 | count | then alone | train | 4 x 1 |" in (one_run / "report.md").read_text(encoding="utf-8")

    # A record changed since its stage wrote it.
    damaged = tmp_path / "damaged"
    shutil.copytree(pieces[0], damaged)
    probe = damaged / "bpe_300" / "baseline-matched-seed0" / "probe.json"
    probe.write_text(probe.read_text(encoding="utf-8").replace('"seed": 0', '"seed": 0.0', 1), encoding="utf-8")
    assert cli.main([*gather, str(damaged)]) == 1
    assert f"{probe} is missing, unreadable or changed since its stage wrote it" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
    assert cli.main([*gather, str(tmp_path / "nowhere")]) == 1
    assert f"--gather: {tmp_path / 'nowhere'} is not a folder" in capsys.readouterr().err
    assert {f: (gathered / f).read_bytes() for f in _files(gathered)} == before
