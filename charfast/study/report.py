"""The study's report: report.md, report.json and the plots, from the runs' results.json.

Sections: the spelling probe, the tasks (exact match beside chance, char minus each
control with a paired bootstrap 95% interval), the steps fine-tuning needs to reach 50%
and 80%, and the plots (charfast.study.plots). The numbers come from charfast.study.analysis.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from charfast.atomic import atomic_write
from charfast.gpt import archs
from charfast.gpt.checkpoint import RUN_INFO_NAME, load_checkpoint, read_run_info
from charfast.gpt.metrics import read_metrics
from charfast.study.analysis import (
    THRESHOLDS,
    arch_order,
    at_last_pretraining,
    comparisons_not_made,
    compute_equivalent_rows,
    curve_rows,
    length_rows,
    pretrain_step,
    probe_rows,
    task_rows,
    validation_curve,
)
from charfast.study.encoder_verdict import cheap_encoders, verdict, verdict_rows
from charfast.study.layout import StudyLayout
from charfast.study.plots import plot_length, plot_report
from charfast.study.records import read_record, reusable, source_digest, write_record

LEARNED = 0.6  # exact match on train words that counts a task as learned
TASK_SECTION = "## Tasks after fine-tuning"  # the report's headline table follows it


def load_records(paths: list[Path]) -> list[dict]:
    """The records at `paths`, each checked against the digest it was written with."""
    return [read_record(Path(p)) for p in paths]


def _interval(values: list[float] | None) -> str:
    return "n/a" if not values else f"{values[0]:+.1%} [{values[1]:+.1%}, {values[2]:+.1%}]"


def _archs(rows: list[dict], field: str) -> list[str]:
    return arch_order({arch for row in rows for arch in row[field]})


def _of(values: dict, arch: str, render) -> str:
    """One arch's cell: its value rendered, or "not run" where a row lacks it (a stage that
    failed or has not finished: the report covers the stages that did)."""
    return render(values[arch]) if arch in values else "not run"


def _compared(rows: list[dict]) -> list[str]:
    """The differences a table shows: every control (an empty cell where it did not run, so
    the gap shows), then each alternative that ran."""
    ran = {arch for row in rows for arch in row["difference"]}
    return [*archs.controls(), *(a for a in archs.alternatives() if a in ran)]


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows]) + "\n"


def probe_table(rows: list[dict]) -> str:
    """The probe rows; with a pretraining-steps column when they carry "pretrain_step"."""
    present, compared = _archs(rows, "score"), _compared(rows)
    steps = any("pretrain_step" in r for r in rows)
    header = ["tokenizer", "probe", *(["pretraining steps"] if steps else []), "test tokens", "majority", *present]
    header += [*(f"{archs.treatment()} - {c}" for c in compared), f"per seed ({', '.join(present)})"]
    cells = []
    for r in rows:
        cells.append(
            [
                r["tokenizer"],
                r["probe"],
                *([str(r["pretrain_step"])] if steps else []),
                "/".join(map(str, r["n_test_tokens"])),
                f"{r['majority']:.1%}",
                *(_of(r["score"], a, lambda s: f"{s[0]:.1%} [{s[1]:.1%}, {s[2]:.1%}]") for a in present),
                *(_interval(r["difference"].get(c)) for c in compared),
                "; ".join(_of(r["per_seed"], a, lambda seeds: " / ".join(f"{v:.1%}" for v in seeds)) for a in present),
            ]
        )
    return _markdown(header, cells)


def task_table(rows: list[dict]) -> str:
    present, compared = _archs(rows, "exact_match"), _compared(rows)
    header = ["tokenizer", "task", "fine-tuning", "split", "n x seeds", "chance", *present]
    header += [*(f"{archs.treatment()} - {c}" for c in compared), f"answer loss ({', '.join(present)})"]
    cells = []
    for r in rows:
        cells.append(
            [
                r["tokenizer"],
                r["task"],
                r["finetuning"],
                r["split"],
                f"{r['n']} x {_seeds(r)}",
                f"{r['chance']:.0%}",
                *(_of(r["exact_match"], a, "{:.1%}".format) for a in present),
                *(_interval(r["difference"].get(c)) for c in compared),
                " / ".join(_of(r["answer_loss"], a, "{:.3f}".format) for a in present),
            ]
        )
    return _markdown(header, cells)


def _seeds(row: dict) -> str:
    """How many seeds each arch's cell averages: one number, or a range while some arch's
    stage has not finished for every seed."""
    counts = sorted({len(scores) for scores in row["exact_match_per_seed"].values()})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def learned_summary(rows: list[dict]) -> str:
    """Per tokenizer and arch: the tasks whose exact match on train words (mean over
    seeds) reaches LEARNED in some fine-tuning, with the best one's score."""
    lines = [
        f"Tasks learned (exact match on train words >= {LEARNED:.0%}, mean over seeds, "
        "in the mixed fine-tuning or alone):",
        "",
    ]
    for tokenizer in dict.fromkeys(r["tokenizer"] for r in rows):
        train = [r for r in rows if r["tokenizer"] == tokenizer and r["split"] == "train"]
        tasks = list(dict.fromkeys(r["task"] for r in train))
        for arch in _archs(train, "exact_match"):
            learned = []
            for task in tasks:
                ran = [r for r in train if r["task"] == task and arch in r["exact_match"]]
                best = max(ran, key=lambda r: r["exact_match"][arch], default=None)
                if best and best["exact_match"][arch] >= LEARNED:
                    learned.append(f"{task} ({best['exact_match'][arch]:.0%}, {best['finetuning']})")
            lines.append(f"- {tokenizer}, {arch}: {len(learned)} of {len(tasks)}: {', '.join(learned) or 'none'}")
    return "\n".join(lines) + "\n"


def _steps(values: list[int | None]) -> str:
    reached = [v for v in values if v is not None]
    if len(reached) < len(values):
        return f"not reached ({len(reached)}/{len(values)} seeds)"
    return f"{sum(reached) / len(reached):.0f} [{min(reached)}, {max(reached)}]"


def steps_table(rows: list[dict]) -> str:
    header = ["tokenizer", "task", "fine-tuning", "split", "arch", *(f"steps to {t:.0%}" for t in THRESHOLDS)]
    header.append("exact match at the last step")
    cells = [
        [
            r["tokenizer"],
            r["task"],
            r["finetuning"],
            r["split"],
            r["arch"],
            *(_steps(r["steps_to"][f"{t:.0%}"]) for t in THRESHOLDS),
            f"{r['mean'][-1]:.1%}",
        ]
        for r in rows
    ]
    return _markdown(header, cells)


LENGTH_SPLITS = ("heldout", "nonce")  # the pretraining-length section's splits: words not fine-tuned on


def length_table(rows: list[dict], tokens_per_step: dict[str, int]) -> str:
    """Exact match on held-out and nonce words at each pretraining length, per task: each
    arch's, and char - baseline-matched with its interval."""
    present = _archs(rows, "exact_match")
    header = ["tokenizer", "task", "fine-tuning", "split", "pretraining steps (tokens)", "chance", *present]
    header.append(f"{archs.treatment()} - {archs.capacity_control()}")
    cells = [
        [
            r["tokenizer"],
            r["task"],
            r["finetuning"],
            r["split"],
            f"{r['pretrain_step']} ({r['pretrain_step'] * tokens_per_step.get(r['tokenizer'], 0) / 1e6:.2f}M)",
            f"{r['chance']:.0%}",
            *(_of(r["exact_match"], a, "{:.1%}".format) for a in present),
            _interval(r["difference"].get(archs.capacity_control())),
        ]
        for r in sorted(
            rows, key=lambda r: (r["tokenizer"], r["task"], r["finetuning"], r["split"], r["pretrain_step"])
        )
        if r["split"] in LENGTH_SPLITS
    ]
    return _markdown(header, cells)


def gap_reading(rows: list[dict]) -> str:
    """Per task and split: char - baseline-matched at the first and last pretraining length,
    and the first length whose 95% interval includes zero (mechanical; RESULTS.md reads it)."""
    lines = []
    keys = dict.fromkeys((r["tokenizer"], r["task"], r["finetuning"], r["split"]) for r in rows)
    for tokenizer, task, finetuning, split in keys:
        if split not in LENGTH_SPLITS:
            continue
        series = sorted(
            (
                r
                for r in rows
                if (r["tokenizer"], r["task"], r["finetuning"], r["split"]) == (tokenizer, task, finetuning, split)
            ),
            key=lambda r: r["pretrain_step"],
        )
        matched = archs.capacity_control()
        series = [r for r in series if matched in r["difference"]]
        if len(series) < 2:
            continue
        first, last = series[0], series[-1]
        zero = next(
            (r["pretrain_step"] for r in series if r["difference"][matched][1] <= 0 <= r["difference"][matched][2]),
            None,
        )
        lines.append(
            f"- {tokenizer} {task} ({finetuning}), {split}: {_interval(first['difference'][matched])} at "
            f"{first['pretrain_step']} steps, {_interval(last['difference'][matched])} at {last['pretrain_step']}; "
            + (f"the interval first includes zero at {zero} steps" if zero else "no interval includes zero")
        )
    return "\n".join(lines) + "\n"


def gain_table(rows: list[dict]) -> str:
    header = [
        "tokenizer",
        "pretraining steps",
        "char validation loss (per seed)",
        "baseline-matched steps to it (per seed)",
    ]
    header.append("compute-equivalent gain: mean [min, max] over seeds")
    cells = []
    for r in rows:
        steps = [
            f"{p['baseline_steps']:.0f}" if p["baseline_steps"] is not None else "not reached" for p in r["per_seed"]
        ]
        gain = (
            "n/a (not reached)"
            if r["gain"] is None
            else f"{r['gain'][0]:.2f}x [{r['gain'][1]:.2f}, {r['gain'][2]:.2f}]"
        )
        cells.append(
            [
                r["tokenizer"],
                str(r["pretrain_step"]),
                " / ".join(f"{p['char_val_loss']:.3f}" for p in r["per_seed"]),
                " / ".join(steps),
                gain,
            ]
        )
    return _markdown(header, cells)


def _pretraining_curves(records: list[dict], layout: StudyLayout) -> tuple[dict, dict]:
    """((tokenizer, arch, seed) -> validation_curve of its pretraining, tokenizer -> tokens per step)."""
    curves, tokens = {}, {}
    for tokenizer, arch, seed in dict.fromkeys((r["tokenizer"], r["arch"], r["seed"]) for r in records):
        path = layout.pretrain_dir(tokenizer, arch, seed) / "metrics.jsonl"
        metrics = read_metrics(path, "make the report")
        curves[(tokenizer, arch, seed)] = validation_curve(metrics)
        folder = layout.pretrain_dir(tokenizer, arch, seed)
        info = read_run_info(folder / RUN_INFO_NAME)  # no tensors read; runs saved before it: the checkpoint
        config = (info or load_checkpoint(folder / "ckpt.pt"))["config"]
        tokens[tokenizer] = config["batch_size"] * config["block_size"] * config["grad_accum"]
    return curves, tokens


def length_section(results: list[dict], probes: list[dict], layout: StudyLayout) -> tuple[list[str], dict]:
    """The report's pretraining-length section (markdown lines) and its report.json part;
    nothing when no tokenizer has several pretraining points."""
    task_length, probe_length = length_rows(results, probes)
    if not task_length:
        return [], {}
    points = {}
    for record in results:
        if pretrain_step(record) is not None:
            points.setdefault(record["tokenizer"], set()).add(pretrain_step(record))
    points = {t: sorted(steps) for t, steps in points.items() if len(steps) > 1}
    curves, tokens = _pretraining_curves([r for r in results if r["tokenizer"] in points], layout)
    gains = compute_equivalent_rows(curves, points)
    plots = plot_length(curves, tokens, gains, task_length, probe_length, layout.root)
    text = [
        "## Pretraining length",
        "",
        "The same pretraining runs, their weights kept at several steps, each then probed and fine-tuned as "
        "above (one learning-rate schedule for the whole run). Compute-equivalent gain: the steps "
        "baseline-matched needs to reach char's validation loss at N steps, over N (paired by seed; with two "
        "seeds, min and max are the two).",
        "",
        gain_table(gains) if gains else "n/a: needs baseline-matched runs (see above)\n",
        "Spelling probe at each length:",
        "",
        probe_table(probe_length),
        "Exact match on words the fine-tuning never saw, at each length (tasks; 95% intervals):",
        "",
        length_table(task_length, tokens),
        "Reading, mechanically (char - baseline-matched):",
        "",
        gap_reading(task_length) if gains else "n/a: needs baseline-matched runs (see above)\n",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
    ]
    return text, {"length_tasks": task_length, "length_probe": probe_length, "compute_equivalent": gains}


def lstm_needed_section(results: list[dict], probes: list[dict], layout: StudyLayout) -> tuple[list[str], dict]:
    """The encoders study's section (markdown lines) and its report.json part: the decision
    rule (charfast.study.encoder_verdict) on the records; nothing when no cheap encoder ran."""
    ran = {r["arch"] for r in [*results, *probes]}
    if not ran & set(cheap_encoders()):
        return [], {}
    curves, _ = _pretraining_curves(results, layout)
    val_loss = {run: float(losses[-1]) for run, (_, losses) in curves.items() if len(losses)}
    rows = verdict_rows(results, probes, val_loss)
    answer = verdict(rows)
    header = ["tokenizer", "encoder", "endpoint", "seeds", f"{archs.treatment()}'s advantage", "margin", "reading"]
    cells = [
        [r["tokenizer"], r["encoder"], r["endpoint"], str(r["seeds"]), _advantage(r), _margin(r), r["reading"]]
        for r in rows
    ]
    text = [
        "## Is the LSTM needed?",
        "",
        "The rule fixed before the runs (RESULTS.md): the char-LSTM's advantage over each cheaper encoder at its "
        "parameter count on held-out spell and count exact match, the first-letter probe (points) and the last "
        "validation loss (nats), 95% intervals resampling seeds and examples; within: the upper end below the "
        "margin; below: the lower end above it.",
        "",
        f"**Verdict: {answer}.**",
        "",
        _markdown(header, cells) if cells else "n/a: no cheap encoder ran beside char\n",
    ]
    return text, {"lstm_needed": rows, "lstm_needed_verdict": answer}


def _advantage(row: dict) -> str:
    estimate, low, high = row["advantage"]
    if row["endpoint"] == "loss":
        return f"{estimate:+.3f}" if low is None else f"{estimate:+.3f} [{low:+.3f}, {high:+.3f}]"
    return f"{estimate:+.1%} [{low:+.1%}, {high:+.1%}]"


def _margin(row: dict) -> str:
    return f"{row['margin']:.2f} nats" if row["endpoint"] == "loss" else f"{row['margin']:.0%}"


def report_inputs_digest(records: dict[Path, dict], layout: StudyLayout) -> str:
    """SHA-256 of everything a report is made from: the records (by path), the pretrainings'
    metrics.jsonl (the loss curves) and the code of this module and every charfast module it
    imports (the tasks' chance, the probes, the split names, the plots...)."""
    digest = hashlib.sha256(source_digest(__name__).encode())

    def add(path: Path, content: bytes) -> None:
        digest.update(str(path.relative_to(layout.root) if path.is_relative_to(layout.root) else path.name).encode())
        digest.update(hashlib.sha256(content).digest())

    for path in sorted(records):
        add(path, json.dumps(records[path], sort_keys=True).encode("utf-8"))
    runs = sorted({(r["tokenizer"], r["arch"], r["seed"]) for r in records.values()})
    for path in [layout.pretrain_dir(*run) / "metrics.jsonl" for run in runs]:
        add(path, path.read_bytes())
    return digest.hexdigest()


def write_report(probe_paths: list[Path], result_paths: list[Path], study_root: Path) -> tuple[Path, bool]:
    """report.md, report.json and the plots in study_root, from the runs' probe.json and
    results.json files: (report.md's path, whether it was written now; a report made from
    the same inputs, report_inputs_digest, is kept). The tables of tasks, probes and learning curves
    are at each tokenizer's last pretraining step; a study with kept steps adds the
    pretraining-length section."""
    layout = StudyLayout(study_root)
    all_results, all_probes = load_records(result_paths), load_records(probe_paths)
    records = dict(zip([Path(p) for p in [*result_paths, *probe_paths]], [*all_results, *all_probes], strict=True))
    built_from = {"inputs_sha256": report_inputs_digest(records, layout)}
    if reusable(study_root / "report.json", built_from) is not None:  # report.md and the plots as written
        return study_root / "report.md", False
    results = at_last_pretraining(all_results)
    tasks, probes, curves = task_rows(results), probe_rows(at_last_pretraining(all_probes)), curve_rows(results)
    plots = plot_report(results, tasks, probes, curves, layout)
    length_text, length_json = length_section(all_results, all_probes, layout)
    needed_text, needed_json = lstm_needed_section(results, at_last_pretraining(all_probes), layout)
    not_made = comparisons_not_made([*results, *at_last_pretraining(all_probes)])
    limits = ["## What this study cannot say", "", *(f"- {line}" for line in not_made), ""] if not_made else []
    text = [
        "# charfast study report",
        "",
        *limits,
        "Intervals are 95% percentile-bootstrap intervals. Tasks: exact match of greedy decoding up to the "
        "first newline, over the frozen questions, each question's score averaged over seeds first; chance is "
        "what a constant answer scores (count and contains are balanced); fine-tuning: mixed (all tasks at once, "
        "from the pretrained model) or then alone (the mixed model fine-tuned further on that task only). "
        "Probe: linear probes on each token's input vector (no position), trained on 80% of the tokens with a "
        "letter and scored on the other 20%, "
        "tokens resampled within each seed; majority is the constant-answer baseline. Steps: the first "
        "evaluated fine-tuning step at or above the threshold, mean [min, max] over seeds.",
        "",
        "## Spelling probe",
        "",
        probe_table(probes),
        TASK_SECTION,
        "",
        learned_summary(tasks),
        task_table(tasks),
        "## Learning curves: steps to 50% and 80% exact match",
        "",
        steps_table(curves),
        *needed_text,
        *length_text,
        "## Plots",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
    ]
    path = study_root / "report.md"
    with atomic_write(path) as f:
        f.write("\n".join(text).encode("utf-8"))
    report_json = {"probe": probes, "tasks": tasks, "curves": curves, "not_made": not_made, **length_json}
    report_json |= needed_json
    plots = [study_root / name for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", "\n".join(text))]
    write_record(study_root / "report.json", report_json, built_from, [path, *plots])
    return path, True
