"""The study's numbers, computed from the runs' results.json records: the rows of the
report's tables and the points of its plots.

Comparisons are the treatment against each control (charfast.gpt.archs) on the same
questions (or probe tokens), e.g.
    char - baseline-matched   real spelling plus capacity, against capacity matched by ids
    char - char-shuffled      real spelling, against the same encoder fed another token's chars
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from charfast.gpt import archs
from charfast.study.layout import MIXED, finetuning_kind
from charfast.study.probe import PROBES
from charfast.study.stats import paired_bootstrap_difference, stratified_bootstrap_mean
from charfast.study.tasks import TASKS

THRESHOLDS = (0.5, 0.8)


def runs_by_arch(records: list[dict], tokenizer: str, finetuning: str | None = None) -> dict[str, list[dict]]:
    """arch -> that tokenizer's records (of that fine-tuning, if given), in seed order."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for run in records:
        if run["tokenizer"] == tokenizer and finetuning in (None, run.get("finetuning")):
            grouped[run["arch"]].append(run)
    return {arch: sorted(runs, key=lambda r: r["seed"]) for arch, runs in grouped.items()}


def tokenizers_by_size(records: list[dict]) -> list[str]:
    """The tokenizers of the records, smallest vocabulary first."""
    sizes = {run["tokenizer"]: run["n_vocab"] for run in records}
    return sorted(sizes, key=lambda t: (sizes[t], t))


def finetunings_of(results: list[dict]) -> list[str]:
    """The fine-tunings of the results: mixed first, then the solo ones by name."""
    return sorted({r["finetuning"] for r in results}, key=lambda f: (f != MIXED, f))


def arch_order(names) -> list[str]:
    """The archs present (charfast.gpt.archs), in the registry's order: the treatment, the
    controls, the rest. An arch that is not registered (records of another version) is a
    ValueError naming it, never a dropped row."""
    present = set(names)
    for name in present:
        archs.get(name, "a record's arch")
    return [name for name in archs.names() if name in present]


def paired_seeds(runs: dict[str, list[dict]], arch: str) -> bool:
    """Whether `arch` and the treatment both ran (runs: runs_by_arch), with the same seeds."""
    char = archs.treatment()
    return arch in runs and char in runs and [r["seed"] for r in runs[arch]] == [r["seed"] for r in runs[char]]


def comparisons_not_made(records: list[dict]) -> list[str]:
    """What the study cannot say with the runs it has, in words: a comparison per control
    that no tokenizer has paired with char (the same seeds), and intervals over one seed."""
    missing = []
    char, capacity = archs.treatment(), archs.capacity_control()
    for control in archs.controls():
        what = f"{char} - {control} ({archs.get(control).compares})"
        if control == capacity:
            what += ", its plots and the compute-equivalent gain"
        tokenizers = dict.fromkeys(r["tokenizer"] for r in records)
        if not any(paired_seeds(runs_by_arch(records, t), control) for t in tokenizers):
            missing.append(f"{what}: needs --archs to include {char} and {control}, with the same --seeds")
    if records and len({r["seed"] for r in records}) < 2:
        missing.append("seed-to-seed variation: with one seed the intervals resample questions (or tokens) only")
    return missing


def task_label(row: dict) -> str:
    """A task row's task as the plots name it: "count", or "count then alone" for a solo fine-tuning."""
    return row["task"] if row["finetuning"] == MIXED else f"{row['task']} {row['finetuning']}"


def score_matrix(runs: list[dict], task: str, split: str, field: str) -> np.ndarray:
    """[seeds, questions] of `field` ("correct" or "answer_loss") for one task and split,
    runs in seed order; every run answered the same questions in the same order."""
    rows = [[r[field] for r in run["after"] if r["task"] == task and r["split"] == split] for run in runs]
    return np.asarray(rows, dtype=np.float64)


def task_rows(results: list[dict]) -> list[dict]:
    """One row per (tokenizer, task, fine-tuning, split): chance, each arch's exact match and
    answer loss (means over seeds), and char - each control or alternative present with a
    paired bootstrap interval."""
    rows = []
    for tokenizer in tokenizers_by_size(results):
        of_tokenizer = [row for f in finetunings_of(results) for row in _task_rows_of(results, tokenizer, f)]
        rows += sorted(of_tokenizer, key=lambda r: (r["task"], r["finetuning"] != MIXED))  # stable: splits keep order
    return rows


def _task_rows_of(results: list[dict], tokenizer: str, finetuning: str) -> list[dict]:
    rows = []
    runs = runs_by_arch(results, tokenizer, finetuning)
    if runs:  # every arch answered the same questions: the first one's name them
        first = arch_order(runs)[0]
        for task, split in sorted({(r["task"], r["split"]) for r in runs[first][0]["after"]}):
            acc = {arch: score_matrix(rs, task, split, "correct") for arch, rs in runs.items()}
            loss = {arch: score_matrix(rs, task, split, "answer_loss") for arch, rs in runs.items()}
            row = {
                "tokenizer": tokenizer,
                "n_vocab": runs[first][0]["n_vocab"],
                "task": task,
                "finetuning": finetuning_kind(finetuning),
                "split": split,
                "n": acc[first].shape[1],
                "seeds": acc[first].shape[0],
                "chance": TASKS[task].chance,
                "exact_match": {arch: float(a.mean()) for arch, a in acc.items()},
                "exact_match_per_seed": {arch: a.mean(axis=1).tolist() for arch, a in acc.items()},
                "answer_loss": {arch: float(v.mean()) for arch, v in loss.items()},
                "difference": {},
            }
            char = archs.treatment()
            for control in archs.compared():
                if paired_seeds(runs, control) and acc[char].shape[1]:
                    interval = paired_bootstrap_difference(acc[char], acc[control])
                    row["difference"][control] = [interval.estimate, interval.low, interval.high]
            rows.append(row)
    return rows


def probe_rows(probes: list[dict]) -> list[dict]:
    """One row per (tokenizer, probe): each arch's held-out score with an interval (the
    tokens resampled within each seed), the majority baseline, per-seed scores, and char -
    control paired per token within each seed."""
    rows = []
    for tokenizer in tokenizers_by_size(probes):
        runs = runs_by_arch(probes, tokenizer)
        first = arch_order(runs)[0]  # every arch's probe scored the same tokens
        for probe in (p for p in PROBES if all(p in r["probe"] for rs in runs.values() for r in rs)):
            scores = {arch: [np.asarray(r["probe"][probe]["score"]) for r in rs] for arch, rs in runs.items()}
            row = {
                "tokenizer": tokenizer,
                "n_vocab": runs[first][0]["n_vocab"],
                "probe": probe,
                "n_test_tokens": [len(s) for s in scores[first]],
                "majority": float(np.mean([np.mean(r["probe"][probe]["majority"]) for r in runs[first]])),
                "score": {},
                "per_seed": {arch: [float(s.mean()) for s in groups] for arch, groups in scores.items()},
                "difference": {},
            }
            for arch, groups in scores.items():
                interval = stratified_bootstrap_mean(groups)
                row["score"][arch] = [interval.estimate, interval.low, interval.high]
            for control in archs.compared():
                if paired_seeds(runs, control):
                    diffs = [a - b for a, b in zip(scores[archs.treatment()], scores[control])]
                    interval = stratified_bootstrap_mean(diffs)
                    row["difference"][control] = [interval.estimate, interval.low, interval.high]
            rows.append(row)
    return rows


def steps_to(curve: list[dict], key: str, threshold: float) -> int | None:
    """The first evaluated fine-tuning step whose exact match on `key` ("task|split")
    reaches `threshold`; None when no evaluation did."""
    for point in curve:
        if point["exact_match"].get(key, 0.0) >= threshold:
            return point["step"]
    return None


def curve_rows(results: list[dict]) -> list[dict]:
    """One row per (tokenizer, fine-tuning, arch, task, split) of the learning curves: exact
    match per evaluated step (mean, min and max over seeds) and the steps to each THRESHOLDS
    per seed."""
    rows = []
    for tokenizer, finetuning in ((t, f) for t in tokenizers_by_size(results) for f in finetunings_of(results)):
        for arch, runs in runs_by_arch(results, tokenizer, finetuning).items():
            steps = [p["step"] for p in runs[0]["learning_curve"]]
            for key in sorted(runs[0]["learning_curve"][0]["exact_match"]):
                task, split = key.split("|")
                values = np.asarray([[p["exact_match"][key] for p in r["learning_curve"]] for r in runs])  # [S, P]
                rows.append(
                    {
                        "tokenizer": tokenizer,
                        "arch": arch,
                        "task": task,
                        "finetuning": finetuning_kind(finetuning),
                        "split": split,
                        "steps": steps,
                        "mean": values.mean(axis=0).tolist(),
                        "min": values.min(axis=0).tolist(),
                        "max": values.max(axis=0).tolist(),
                        "steps_to": {
                            f"{threshold:.0%}": [steps_to(r["learning_curve"], key, threshold) for r in runs]
                            for threshold in THRESHOLDS
                        },
                    }
                )
    return rows


# ------------------------------------------------------------------ the pretraining-length axis
def pretrain_step(record: dict) -> int | None:
    """The pretraining step of the weights a probe or fine-tuning record was built from;
    None for a solo fine-tuning's record written before records named it (a study of one
    pretraining point)."""
    return record.get("pretrain_step", record["built_from"].get("pretrain_step"))


def at_last_pretraining(records: list[dict]) -> list[dict]:
    """The records built on each tokenizer's last pretraining step (what a study without
    kept steps has only)."""
    last = defaultdict(int)
    for record in records:
        last[record["tokenizer"]] = max(last[record["tokenizer"]], pretrain_step(record) or 0)
    return [r for r in records if pretrain_step(r) in (None, last[r["tokenizer"]])]


def length_rows(results: list[dict], probes: list[dict]) -> tuple[list[dict], list[dict]]:
    """(task rows, probe rows) as task_rows and probe_rows give them, at every pretraining
    step of a tokenizer that has several, each with "pretrain_step"."""
    tasks, probe_table = [], []
    for step in sorted({pretrain_step(r) for r in results} - {None}):
        at_step = [r for r in results if pretrain_step(r) == step]
        several = {r["tokenizer"] for r in results if pretrain_step(r) != step}
        tasks += [{**row, "pretrain_step": step} for row in task_rows(at_step) if row["tokenizer"] in several]
    for step in sorted({pretrain_step(r) for r in probes} - {None}):
        at_step = [r for r in probes if pretrain_step(r) == step]
        several = {r["tokenizer"] for r in probes if pretrain_step(r) != step}
        probe_table += [{**row, "pretrain_step": step} for row in probe_rows(at_step) if row["tokenizer"] in several]
    return tasks, probe_table


def validation_curve(metrics: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, validation losses) of a pretraining's metrics.jsonl records."""
    points = sorted((r["step"], r["val_loss"]) for r in metrics if "val_loss" in r)
    return np.asarray([p[0] for p in points], dtype=float), np.asarray([p[1] for p in points], dtype=float)


def steps_to_loss(steps: np.ndarray, losses: np.ndarray, target: float) -> float | None:
    """The first step at which a validation curve reaches `target` (linear between its
    evaluations); None when it never does."""
    below = np.nonzero(losses <= target)[0]
    if below.size == 0:
        return None
    i = below[0]
    if i == 0:
        return float(steps[0])
    (s0, s1), (l0, l1) = steps[i - 1 : i + 1], losses[i - 1 : i + 1]
    return float(s0 + (s1 - s0) * (l0 - target) / (l0 - l1))


def compute_equivalent_rows(curves: dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]], points) -> list[dict]:
    """Per tokenizer and pretraining point N: char's validation loss at N, and how many
    steps baseline-matched (the same seed) needs to reach it: the compute-equivalent gain
    is those steps / N (per seed, their mean, min and max; None where the baseline never
    reaches it in its run). curves: (tokenizer, arch, seed) -> validation_curve."""
    rows = []
    for tokenizer in dict.fromkeys(t for t, _, _ in curves):
        char, matched = archs.treatment(), archs.capacity_control()
        seeds = sorted(s for t, a, s in curves if t == tokenizer and a == char and (t, matched, s) in curves)
        if not seeds:  # no pair of char and baseline-matched runs: nothing to compare
            continue
        for step in points.get(tokenizer, []):
            per_seed = []
            for seed in seeds:
                char_steps, char_losses = curves[(tokenizer, char, seed)]
                target = float(np.interp(step, char_steps, char_losses))
                reached = steps_to_loss(*curves[(tokenizer, matched, seed)], target)
                per_seed.append({"seed": seed, "char_val_loss": target, "baseline_steps": reached})
            gains = [p["baseline_steps"] / step for p in per_seed if p["baseline_steps"] is not None]
            rows.append(
                {
                    "tokenizer": tokenizer,
                    "pretrain_step": step,
                    "per_seed": per_seed,
                    "gain": [float(np.mean(gains)), min(gains), max(gains)] if len(gains) == len(per_seed) else None,
                }
            )
    return rows
