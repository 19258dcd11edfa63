"""The study's report: a markdown table and PNG plots from the runs' results.json files.

Per tokenizer, task and split: each arch's exact-match accuracy and teacher-forced answer
loss (means over seeds), and the char-minus-baseline accuracy difference with a paired
bootstrap 95% interval (both archs answered the same frozen questions; each question's
score is first averaged over seeds). Plots: pretraining loss curves (the study's Figure
3), fine-tuning loss curves (its Figure 4) and accuracy by task and split.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from charfast.atomic import atomic_write
from charfast.study.layout import StudyLayout
from charfast.study.stats import paired_bootstrap_difference

CHAR, CONTROL = "char", "baseline-matched"


def load_results(paths: list[Path]) -> list[dict]:
    return [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]


def score_matrix(runs: list[dict], task: str, split: str, field: str) -> np.ndarray:
    """[seeds, questions] of `field` ("correct" or "answer_loss") for one task and split,
    runs in seed order; every run answered the same questions in the same order."""
    rows = [[r[field] for r in run["after"] if r["task"] == task and r["split"] == split] for run in runs]
    return np.asarray(rows, dtype=np.float64)


def comparison_rows(results: list[dict]) -> list[dict]:
    """One row per (tokenizer, task, split) with both archs' scores and the interval."""
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in results:
        by_key[(run["tokenizer"], run["arch"])].append(run)
    rows = []
    for tokenizer in sorted({run["tokenizer"] for run in results}):
        runs = {arch: sorted(by_key[(tokenizer, arch)], key=lambda r: r["seed"]) for arch in (CHAR, CONTROL)}
        if not runs[CHAR] or not runs[CONTROL]:
            continue
        cells = sorted({(r["task"], r["split"]) for r in runs[CHAR][0]["after"]})
        for task, split in cells:
            acc = {arch: score_matrix(runs[arch], task, split, "correct") for arch in runs}
            loss = {arch: score_matrix(runs[arch], task, split, "answer_loss") for arch in runs}
            interval = paired_bootstrap_difference(acc[CHAR], acc[CONTROL])
            rows.append(
                {
                    "tokenizer": tokenizer,
                    "task": task,
                    "split": split,
                    "n": acc[CHAR].shape[1],
                    "seeds": acc[CHAR].shape[0],
                    "acc_char": acc[CHAR].mean(),
                    "acc_control": acc[CONTROL].mean(),
                    "diff": interval.estimate,
                    "low": interval.low,
                    "high": interval.high,
                    "loss_char": loss[CHAR].mean(),
                    "loss_control": loss[CONTROL].mean(),
                }
            )
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| tokenizer | task | split | n x seeds | exact match char | baseline-matched | "
        "difference [95% CI] | answer loss char | baseline-matched |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['tokenizer']} | {r['task']} | {r['split']} | {r['n']} x {r['seeds']} | "
            f"{r['acc_char']:.1%} | {r['acc_control']:.1%} | "
            f"{r['diff']:+.1%} [{r['low']:+.1%}, {r['high']:+.1%}] | "
            f"{r['loss_char']:.3f} | {r['loss_control']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot_report(results: list[dict], rows: list[dict], layout: StudyLayout) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib import pyplot as plt

    colours = {CHAR: "tab:blue", CONTROL: "tab:orange"}
    paths = []
    fig, (pre, fine) = plt.subplots(1, 2, figsize=(12, 4), dpi=120)
    for run in results:
        label = f"{run['arch']} seed {run['seed']} ({run['tokenizer']})"
        metrics = layout.pretrain_dir(run["tokenizer"], run["arch"], run["seed"]) / "metrics.jsonl"
        records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
        val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
        if val:
            pre.plot(*zip(*val), color=colours.get(run["arch"]), alpha=0.8, label=label)
        curve = [(r["step"], r["train_loss"]) for r in run["finetune_curve"]]
        fine.plot(*zip(*curve), color=colours.get(run["arch"]), alpha=0.6, linewidth=0.8, label=label)
    pre.set(title="pretraining: validation loss", xlabel="step", ylabel="nats / token")
    fine.set(title="fine-tuning: answer loss (train batches)", xlabel="step", ylabel="nats / answer token")
    for ax in (pre, fine):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    paths.append(layout.root / "loss_curves.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    for tokenizer in sorted({r["tokenizer"] for r in rows}):
        mine = [r for r in rows if r["tokenizer"] == tokenizer]
        splits = sorted({r["split"] for r in mine})
        fig, axes = plt.subplots(len(splits), 1, figsize=(12, 2.6 * len(splits)), dpi=120, squeeze=False)
        for ax, split in zip(axes[:, 0], splits):
            cells = [r for r in mine if r["split"] == split]
            x = np.arange(len(cells))
            ax.bar(x - 0.2, [r["acc_char"] for r in cells], 0.4, color=colours[CHAR], label=CHAR)
            ax.bar(x + 0.2, [r["acc_control"] for r in cells], 0.4, color=colours[CONTROL], label=CONTROL)
            ax.errorbar(
                x,
                [r["diff"] for r in cells],
                yerr=[[r["diff"] - r["low"] for r in cells], [r["high"] - r["diff"] for r in cells]],
                fmt="k.",
                capsize=3,
                label="char - baseline (95% CI)",
            )
            ax.axhline(0, color="grey", linewidth=0.5)
            ax.set_xticks(x, [r["task"] for r in cells], fontsize=7)
            ax.set_ylabel(f"{split}\nexact match")
            ax.set_ylim(-1, 1)
        axes[0, 0].set_title(f"exact-match accuracy by task, {tokenizer}")
        axes[0, 0].legend(fontsize=7, ncol=3)
        fig.tight_layout()
        paths.append(layout.accuracy_plot(tokenizer))
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def write_report(result_paths: list[Path], study_root: Path) -> Path:
    """report.md (and its PNGs) in study_root; returns its path."""
    results = load_results(result_paths)
    rows = comparison_rows(results)
    plots = plot_report(results, rows, StudyLayout(study_root))
    text = [
        "# charfast study report",
        "",
        "Exact match: greedy decoding up to the first newline, answer value compared exactly. "
        "Answer loss: teacher-forced cross-entropy of the answer tokens (the original study's measure). "
        "Intervals: paired bootstrap over the shared questions, scores averaged over seeds first.",
        "",
        markdown_table(rows),
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
    ]
    path = study_root / "report.md"
    with atomic_write(path) as f:
        f.write("\n".join(text).encode("utf-8"))
    with atomic_write(study_root / "report.json") as f:
        f.write(json.dumps(rows, indent=1).encode("utf-8"))
    return path
