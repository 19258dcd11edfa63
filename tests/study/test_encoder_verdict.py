"""Is the LSTM needed? The decision rule on made-up records: each reading and each verdict,
the intervals over seeds and examples, and the report's section."""

from __future__ import annotations

import json

import numpy as np
import pytest

from charfast.study import encoder_verdict, report
from charfast.study.encoder_verdict import cheap_encoders, verdict, verdict_rows
from charfast.study.layout import StudyLayout
from charfast.study.stats import seed_and_example_bootstrap

TOKENIZERS = {"bpe:512": 512, "bpe:4096": 4096}
SEEDS = (0, 1, 2)
N = 200  # questions per task, tokens per probe


def _scores(rate: float, seed: int, salt: int) -> list[float]:
    """N 0/1 scores with `rate` of them right, the same draws for every arch of a seed."""
    draws = np.random.default_rng(1000 * seed + salt).random(N)
    return (draws < rate).astype(float).tolist()


def make_records(penalty: dict[str, dict[str, float]]):
    """(results, probes, val_loss) of char and every cheap encoder at every tokenizer and seed;
    penalty[arch][endpoint]: how much worse than char that arch is (points; nats for loss)."""
    results, probes, val_loss = [], [], {}
    for tokenizer, n_vocab in TOKENIZERS.items():
        for arch in ("char", *cheap_encoders()):
            worse = penalty.get(arch, {})
            for seed in SEEDS:
                identity = {"tokenizer": tokenizer, "arch": arch, "seed": seed, "n_vocab": n_vocab}
                for finetuning, tasks in (("mixed", ("spell", "count")), ("count", ("count",))):
                    after = [
                        {"task": task, "split": "heldout", "correct": c, "answer_loss": 1.0}
                        for salt, task in enumerate(tasks)
                        for c in _scores(0.6 - worse.get(task, 0.0), seed, salt)
                    ]
                    results.append({**identity, "finetuning": finetuning, "after": after})
                score = _scores(0.7 - worse.get("probe", 0.0), seed, 7)
                probes.append({**identity, "probe": {"first_letter": {"score": score, "majority": [0.1] * N}}})
                val_loss[(tokenizer, arch, seed)] = 3.0 + 0.01 * seed + worse.get("loss", 0.0)
    return results, probes, val_loss


def test_an_encoder_as_good_as_the_lstm_reads_within_everywhere_and_the_lstm_is_not_needed():
    rows = verdict_rows(*make_records({}))
    assert len(rows) == len(TOKENIZERS) * len(cheap_encoders()) * 4
    assert {r["reading"] for r in rows} == {"within"}
    assert all(r["advantage"][1] <= 0 <= r["advantage"][2] for r in rows)
    assert verdict(rows).startswith("the LSTM is not needed: char-bag, char-posbag, char-ngram")


def test_encoders_all_clearly_worse_somewhere_make_the_lstm_needed():
    penalty = {arch: {"spell": 0.3} for arch in cheap_encoders()}
    penalty["char-cnn"] = {"loss": 0.5}  # worse on another endpoint only
    rows = verdict_rows(*make_records(penalty))
    reading = {(r["tokenizer"], r["encoder"], r["endpoint"]): r["reading"] for r in rows}
    assert (
        reading[("bpe:512", "char-bag", "spell")] == "below" and reading[("bpe:512", "char-bag", "probe")] == "within"
    )
    assert (
        reading[("bpe:4096", "char-cnn", "loss")] == "below" and reading[("bpe:4096", "char-cnn", "spell")] == "within"
    )
    assert verdict(rows) == (
        "the LSTM is needed: every cheap encoder falls below it by more than the margin on some primary endpoint"
    )


def test_an_encoder_near_the_margin_leaves_it_undecided():
    penalty = {arch: {"spell": 0.3} for arch in cheap_encoders()}
    penalty["char-ngram"] = {"count": 0.05}  # right at the margin: the interval straddles it
    rows = verdict_rows(*make_records(penalty))
    (row,) = [
        r for r in rows if r["encoder"] == "char-ngram" and r["endpoint"] == "count" and r["tokenizer"] == "bpe:512"
    ]
    assert row["reading"] == "undecided"
    assert verdict(rows) == (
        "undecided: no cheap encoder stays within the margin everywhere, and char-ngram never falls clearly below it"
    )


def test_without_every_encoder_and_endpoint_there_is_no_verdict():
    results, probes, val_loss = make_records({})
    results = [r for r in results if r["arch"] != "char-cnn"]
    rows = verdict_rows(results, probes, val_loss)
    needs = "n/a: the rule needs every cheap encoder beside char on every endpoint at bpe:512 and bpe:4096 with 3 seeds"
    assert verdict(rows) == f"{needs} (4 of 40 missing)"  # char-cnn's spell and count at 2 vocabularies
    assert verdict([]) == f"{needs} (40 of 40 missing)"


@pytest.mark.parametrize("which", ["one vocabulary", "two seeds"])
def test_a_study_half_done_gives_no_verdict(which):
    """With every encoder far inside the margin, a verdict would read "not needed": the rule
    was fixed for both vocabularies and 3 seeds, and a half-done study must not answer it."""
    results, probes, val_loss = make_records({})
    assert verdict(verdict_rows(results, probes, val_loss)).startswith("the LSTM is not needed")
    if which == "one vocabulary":
        keep = lambda r: r["tokenizer"] == "bpe:512"  # noqa: E731
        missing = 20
    else:
        keep = lambda r: r["seed"] != 2  # noqa: E731
        missing = 40
    results, probes = [r for r in results if keep(r)], [r for r in probes if keep(r)]
    val_loss = {run: loss for run, loss in val_loss.items() if keep(dict(zip(("tokenizer", "arch", "seed"), run)))}
    assert verdict(verdict_rows(results, probes, val_loss)).endswith(f"({missing} of 40 missing)")


def test_one_seeds_loss_has_no_interval_and_no_reading():
    """A loss is one number per run: with one seed there is nothing to resample, and a
    zero-width interval would read "within" or "below" off a single run."""
    results, probes, val_loss = make_records({"char-bag": {"loss": 0.2, "spell": 0.02}})
    keep = lambda r: r["seed"] == 0  # noqa: E731
    results, probes = [r for r in results if keep(r)], [r for r in probes if keep(r)]
    val_loss = {run: loss for run, loss in val_loss.items() if run[2] == 0}
    rows = {(r["tokenizer"], r["encoder"], r["endpoint"]): r for r in verdict_rows(results, probes, val_loss)}
    loss = rows[("bpe:512", "char-bag", "loss")]
    assert loss["reading"] == "n/a (one seed, no interval)"
    assert loss["advantage"] == [pytest.approx(0.2), None, None]
    assert report._advantage(loss) == "+0.200"
    spell = rows[("bpe:512", "char-bag", "spell")]  # one seed, but its questions resample
    assert spell["reading"] in ("within", "undecided") and spell["advantage"][1] < spell["advantage"][2]


def test_the_interval_widens_with_what_the_seeds_disagree():
    rng = np.random.default_rng(0)
    agreeing = rng.normal(0.1, 0.5, size=(3, 400))
    disagreeing = agreeing + np.array([[0.0], [0.4], [-0.4]])
    narrow, wide = seed_and_example_bootstrap(agreeing), seed_and_example_bootstrap(disagreeing)
    assert narrow.estimate == pytest.approx(wide.estimate)
    assert (wide.high - wide.low) > 3 * (narrow.high - narrow.low)
    assert narrow.low < 0.1 < narrow.high


def test_the_report_has_the_section_only_when_a_cheap_encoder_ran(tmp_path):
    results, probes, val_loss = make_records({})
    layout = StudyLayout(tmp_path)
    for (tokenizer, arch, seed), loss in val_loss.items():
        folder = layout.pretrain_dir(tokenizer, arch, seed)
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text(json.dumps({"step": 10, "train_loss": 3.5, "val_loss": loss}) + "\n")
        info = {"format": "charfast-ckpt-1", "config": {"batch_size": 8, "block_size": 16, "grad_accum": 1}}
        (folder / "run.json").write_text(json.dumps(info))
    text, part = report.lstm_needed_section(results, probes, layout)
    assert text[0] == "## Is the LSTM needed?" and any(
        line.startswith("**Verdict: the LSTM is not needed") for line in text
    )
    assert part["lstm_needed_verdict"] == verdict(verdict_rows(results, probes, val_loss))
    only_controls = [r for r in results if r["arch"] == "char"]
    assert report.lstm_needed_section(only_controls, [], layout) == ([], {})
    assert encoder_verdict.MARGIN == {"spell": 0.05, "count": 0.05, "probe": 0.05, "loss": 0.05}
