"""The study's report: report.md, report.json and the plots, from the runs' results.json.

Sections: the spelling probe, the tasks (exact match beside chance, char minus each
control with a paired bootstrap 95% interval), the steps fine-tuning needs to reach 50%
and 80%, and the plots (charfast.study.plots). The numbers come from charfast.study.analysis.
"""

from __future__ import annotations

import json
from pathlib import Path

from charfast.atomic import atomic_write
from charfast.study.analysis import CHAR, CONTROLS, THRESHOLDS, curve_rows, probe_rows, task_rows
from charfast.study.layout import StudyLayout
from charfast.study.plots import plot_report

LEARNED = 0.6  # exact match on train words that counts a task as learned


def load_records(paths: list[Path]) -> list[dict]:
    return [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]


def _interval(values: list[float] | None) -> str:
    return "n/a" if not values else f"{values[0]:+.1%} [{values[1]:+.1%}, {values[2]:+.1%}]"


def _archs(rows: list[dict], field: str) -> list[str]:
    present = {arch for row in rows for arch in row[field]}
    return [arch for arch in (CHAR, *CONTROLS) if arch in present]


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows]) + "\n"


def probe_table(rows: list[dict]) -> str:
    archs = _archs(rows, "score")
    header = ["tokenizer", "probe", "test tokens", "majority", *archs, *(f"char - {c}" for c in CONTROLS)]
    header.append(f"per seed ({', '.join(archs)})")
    cells = []
    for r in rows:
        cells.append(
            [
                r["tokenizer"],
                r["probe"],
                "/".join(map(str, r["n_test_tokens"])),
                f"{r['majority']:.1%}",
                *(f"{r['score'][a][0]:.1%} [{r['score'][a][1]:.1%}, {r['score'][a][2]:.1%}]" for a in archs),
                *(_interval(r["difference"].get(c)) for c in CONTROLS),
                "; ".join(" / ".join(f"{v:.1%}" for v in r["per_seed"][a]) for a in archs),
            ]
        )
    return _markdown(header, cells)


def task_table(rows: list[dict]) -> str:
    archs = _archs(rows, "exact_match")
    header = ["tokenizer", "task", "fine-tuning", "split", "n x seeds", "chance", *archs]
    header += [*(f"char - {c}" for c in CONTROLS), f"answer loss ({', '.join(archs)})"]
    cells = []
    for r in rows:
        cells.append(
            [
                r["tokenizer"],
                r["task"],
                r["finetuning"],
                r["split"],
                f"{r['n']} x {r['seeds']}",
                f"{r['chance']:.0%}",
                *(f"{r['exact_match'][a]:.1%}" for a in archs),
                *(_interval(r["difference"].get(c)) for c in CONTROLS),
                " / ".join(f"{r['answer_loss'][a]:.3f}" for a in archs),
            ]
        )
    return _markdown(header, cells)


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
                best = max((r for r in train if r["task"] == task), key=lambda r: r["exact_match"][arch])
                if best["exact_match"][arch] >= LEARNED:
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


def write_report(probe_paths: list[Path], result_paths: list[Path], study_root: Path) -> Path:
    """report.md, report.json and the plots in study_root, from the runs' probe.json and
    results.json files; returns report.md's path."""
    results = load_records(result_paths)
    tasks, probes, curves = task_rows(results), probe_rows(load_records(probe_paths)), curve_rows(results)
    plots = plot_report(results, tasks, probes, curves, StudyLayout(study_root))
    text = [
        "# charfast study report",
        "",
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
        "## Tasks after fine-tuning",
        "",
        learned_summary(tasks),
        task_table(tasks),
        "## Learning curves: steps to 50% and 80% exact match",
        "",
        steps_table(curves),
        "## Plots",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
    ]
    path = study_root / "report.md"
    with atomic_write(path) as f:
        f.write("\n".join(text).encode("utf-8"))
    with atomic_write(study_root / "report.json") as f:
        f.write(json.dumps({"probe": probes, "tasks": tasks, "curves": curves}, indent=1).encode("utf-8"))
    return path
