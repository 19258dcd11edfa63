"""The study's plots (PNG files only; matplotlib is imported when they are drawn).

loss_curves.png             pretraining validation loss and fine-tuning answer loss per run
length_*_<tok>.png          with kept pretraining steps: see plot_length
learning_curves_<tok>.png   exact match during fine-tuning, task x split, one line per arch
                            (mean over seeds, the band spans the seeds' min and max)
sweep.png                   char - baseline-matched with its 95% interval against the
                            vocabulary size: the probes and each task on the held-out splits
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from charfast.gpt import archs
from charfast.gpt.metrics import read_metrics
from charfast.study.analysis import arch_order, task_label
from charfast.study.layout import MIXED, StudyLayout
from charfast.study.probe import PROBES
from charfast.study.tasks import TASKS
from charfast.study.words import SPLIT_NAMES

SWEEP_SPLITS = ("heldout", "heldout_rare", "nonce")


def _colour(arch: str) -> str:
    return archs.get(arch).colour


def _legend(ax, **style) -> None:
    """A legend when the panel has labelled artists (a study without a control may leave none)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**style)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib import pyplot as plt

    return plt


def plot_losses(results: list[dict], layout: StudyLayout) -> Path:
    plt = _pyplot()
    fig, (pre, fine) = plt.subplots(1, 2, figsize=(12, 4), dpi=110)
    for run in results:
        curve = [(r["step"], r["train_loss"]) for r in run["finetune_curve"]]
        style = "-" if run["finetuning"] == MIXED else ":"
        fine.plot(*zip(*curve), style, color=_colour(run["arch"]), alpha=0.4, linewidth=0.6)
        if run["finetuning"] != MIXED:
            continue  # one pretraining curve per run
        metrics = layout.pretrain_dir(run["tokenizer"], run["arch"], run["seed"]) / "metrics.jsonl"
        records = read_metrics(metrics, "make the report")
        val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
        if val:
            label = f"{run['arch']} seed {run['seed']} ({run['tokenizer']})"
            pre.plot(*zip(*val), color=_colour(run["arch"]), alpha=0.7, label=label)
    pre.set(title="pretraining: validation loss", xlabel="step", ylabel="nats / token")
    fine.set(
        title="fine-tuning: answer loss (train batches; dotted: a task alone)",
        xlabel="step",
        ylabel="nats / answer token",
    )
    for ax in (pre, fine):
        ax.grid(alpha=0.3)
    _legend(pre, fontsize=5, ncol=2)
    fig.tight_layout()
    path = layout.root / "loss_curves.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_learning_curves(curves: list[dict], tokenizer: str, path: Path) -> Path:
    plt = _pyplot()
    mine = [r for r in curves if r["tokenizer"] == tokenizer]
    task_of = {task_label(r): r["task"] for r in mine}  # a panel's label -> its task
    tasks = sorted(task_of)
    splits = [s for s in SPLIT_NAMES if any(r["split"] == s for r in mine)]
    fig, axes = plt.subplots(
        len(splits), len(tasks), figsize=(3 * len(tasks), 2.4 * len(splits)), dpi=110, squeeze=False
    )
    for row in mine:
        ax = axes[splits.index(row["split"]), tasks.index(task_label(row))]
        colour = _colour(row["arch"])
        ax.plot(row["steps"], row["mean"], marker=".", color=colour, label=row["arch"])
        ax.fill_between(row["steps"], row["min"], row["max"], color=colour, alpha=0.15)
    for (i, split), (j, task) in ((a, b) for a in enumerate(splits) for b in enumerate(tasks)):
        ax = axes[i, j]
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        chance = TASKS[task_of[task]].chance
        if chance:
            ax.axhline(chance, color="grey", linestyle="--", linewidth=0.8, label="chance")
        ax.set_title(f"{task}, {split}", fontsize=8)
        if j == 0:
            ax.set_ylabel("exact match")
        if i == len(splits) - 1:
            ax.set_xlabel("fine-tuning step")
    _legend(axes[0, 0], fontsize=6)
    fig.suptitle(f"learning curves, {tokenizer} (mean over seeds; band: min to max; dashed: chance)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_sweep(tasks: list[dict], probes: list[dict], path: Path) -> Path:
    """The headline: char - baseline-matched against vocabulary size, with 95% intervals."""
    plt = _pyplot()
    task_names = sorted({task_label(r) for r in tasks})
    fig, axes = plt.subplots(1, 1 + len(task_names), figsize=(3.2 * (1 + len(task_names)), 3.2), dpi=110)
    axes = np.atleast_1d(axes)
    panels = [
        (
            axes[0],
            "spelling probe",
            [(p, [r for r in probes if r["probe"] == p]) for p in _probes_in(probes)],
        )
    ]
    for ax, task in zip(axes[1:], task_names):
        panels.append(
            (ax, task, [(s, [r for r in tasks if task_label(r) == task and r["split"] == s]) for s in SWEEP_SPLITS])
        )
    for ax, title, series in panels:
        for k, (label, rows) in enumerate(series):
            rows = [r for r in rows if archs.capacity_control() in r["difference"]]
            if not rows:
                continue
            x = np.asarray([r["n_vocab"] for r in rows], dtype=float) * (1 + 0.06 * (k - 1))  # side by side
            d = np.asarray([r["difference"][archs.capacity_control()] for r in rows])  # [points, (estimate, low, high)]
            ax.errorbar(x, d[:, 0], yerr=[d[:, 0] - d[:, 1], d[:, 2] - d[:, 0]], marker="o", capsize=3, label=label)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_xscale("log")
        ax.set(title=title, xlabel="vocabulary size")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=6)
    axes[0].set_ylabel("char - baseline-matched")
    fig.suptitle("char minus baseline-matched, 95% intervals, by vocabulary size")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_report(
    results: list[dict], tasks: list[dict], probes: list[dict], curves: list[dict], layout: StudyLayout
) -> list[Path]:
    paths = [plot_losses(results, layout)]
    if any(archs.capacity_control() in r["difference"] for r in [*tasks, *probes]):  # the headline needs it
        paths.append(plot_sweep(tasks, probes, layout.root / "sweep.png"))
    for tokenizer in dict.fromkeys(r["tokenizer"] for r in curves):
        paths.append(plot_learning_curves(curves, tokenizer, layout.learning_curves_plot(tokenizer)))
    return paths


def plot_length(
    curves: dict, tokens_per_step: dict, gains: list[dict], tasks: list[dict], probes: list[dict], root: Path
) -> list[Path]:
    """The pretraining-length plots of each tokenizer with several pretraining points:
    length_loss_<tok>.png   validation loss against pretraining tokens per arch and seed,
                            the kept points marked with char's compute-equivalent gain
    length_probe_<tok>.png  each probe's held-out score against pretraining steps per arch
                            (95% intervals; dashed: the majority baseline)
    length_gap_<tok>.png    the headline: exact match on held-out and nonce words against
                            pretraining steps per task and arch (dashed: chance), and below
                            it char - baseline-matched with its 95% interval"""
    paths = []
    for tokenizer in dict.fromkeys(r["tokenizer"] for r in tasks):
        name = tokenizer.replace(":", "_")
        paths.append(_plot_length_loss(curves, tokens_per_step, gains, tokenizer, root / f"length_loss_{name}.png"))
        paths.append(_plot_length_probe(probes, tokenizer, root / f"length_probe_{name}.png"))
        paths.append(_plot_length_gap(tasks, tokenizer, root / f"length_gap_{name}.png"))
    return paths


def _plot_length_loss(curves, tokens_per_step, gains, tokenizer, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=110)
    per_step = tokens_per_step[tokenizer] / 1e6
    for (t, arch, seed), (steps, losses) in curves.items():
        if t == tokenizer:
            ax.plot(steps * per_step, losses, color=_colour(arch), alpha=0.8, label=f"{arch} seed {seed}")
    for row in (g for g in gains if g["tokenizer"] == tokenizer):
        x = row["pretrain_step"] * per_step
        ax.axvline(x, color="grey", linewidth=0.6, linestyle=":")
        label = "not reached" if row["gain"] is None else f"{row['gain'][0]:.2f}x"
        ax.annotate(label, (x, ax.get_ylim()[1]), fontsize=7, ha="center", va="top")
    ax.set(
        xscale="log",
        title=f"{tokenizer}: validation loss; at each kept point, char's compute-equivalent gain",
        xlabel="pretraining tokens (millions)",
        ylabel="nats / token",
    )
    ax.title.set_fontsize(8)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _probes_in(rows: list[dict]) -> list[str]:
    """The probes the rows hold, in PROBES' order (a preset runs some of them)."""
    return [p for p in PROBES if any(r["probe"] == p for r in rows)]


def _plot_length_probe(probes: list[dict], tokenizer: str, path: Path) -> Path:
    plt = _pyplot()
    mine = [r for r in probes if r["tokenizer"] == tokenizer]
    present = _probes_in(mine)
    fig, axes = plt.subplots(1, len(present), figsize=(3.4 * len(present), 3.2), dpi=110)
    for ax, probe in zip(np.atleast_1d(axes), present):
        rows = sorted((r for r in mine if r["probe"] == probe), key=lambda r: r["pretrain_step"])
        steps = np.asarray([r["pretrain_step"] for r in rows], dtype=float)
        for k, arch in enumerate(arch_order(rows[0]["score"]) if rows else []):
            s = np.asarray([r["score"][arch] for r in rows])  # [points, (estimate, low, high)]
            x = steps * (1 + 0.04 * k)
            ax.errorbar(x, s[:, 0], yerr=[s[:, 0] - s[:, 1], s[:, 2] - s[:, 0]], marker="o", capsize=3,
                        color=_colour(arch), label=arch)  # fmt: skip
        if rows:
            ax.plot(steps, [r["majority"] for r in rows], color="grey", linestyle="--", linewidth=0.8, label="majority")
        ax.set(xscale="log", title=f"{probe} probe", xlabel="pretraining steps", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("held-out score")
    _legend(np.atleast_1d(axes)[0], fontsize=6)
    fig.suptitle(f"{tokenizer}: is the input vector letter-decodable? (95% intervals)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_length_gap(tasks: list[dict], tokenizer: str, path: Path) -> Path:
    plt = _pyplot()
    mine = [r for r in tasks if r["tokenizer"] == tokenizer and r["split"] in ("heldout", "nonce")]
    labels = sorted({task_label(r) for r in mine})
    fig, axes = plt.subplots(2, len(labels), figsize=(3.2 * len(labels), 5.6), dpi=110, squeeze=False)
    for j, label in enumerate(labels):
        top, bottom = axes[0, j], axes[1, j]
        for k, split in enumerate(("heldout", "nonce")):
            rows = sorted((r for r in mine if task_label(r) == label and r["split"] == split),
                          key=lambda r: r["pretrain_step"])  # fmt: skip
            if not rows:
                continue
            steps = np.asarray([r["pretrain_step"] for r in rows], dtype=float)
            style = "-" if split == "heldout" else "--"
            for arch in arch_order(rows[0]["exact_match"]):
                top.plot(steps, [r["exact_match"][arch] for r in rows], style, marker=".", color=_colour(arch),
                         label=f"{arch}, {split}")  # fmt: skip
            matched = archs.capacity_control()
            with_difference = [r for r in rows if matched in r["difference"]]
            if with_difference:
                d = np.asarray([r["difference"][matched] for r in with_difference])
                x = np.asarray([r["pretrain_step"] for r in with_difference], dtype=float) * (1 + 0.05 * k)
                bottom.errorbar(x, d[:, 0], yerr=[d[:, 0] - d[:, 1], d[:, 2] - d[:, 0]], marker="o", capsize=3,
                                linestyle=style, label=split)  # fmt: skip
            chance = rows[0]["chance"]
            if chance:
                top.axhline(chance, color="grey", linestyle=":", linewidth=0.8)
        top.set(xscale="log", title=label, ylim=(-0.02, 1.02))
        bottom.axhline(0, color="grey", linewidth=0.6)
        bottom.set(xscale="log", xlabel="pretraining steps")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("exact match")
    axes[1, 0].set_ylabel("char - baseline-matched")
    _legend(axes[0, 0], fontsize=5)
    _legend(axes[1, 0], fontsize=6)
    fig.suptitle(f"{tokenizer}: does the char advantage survive longer pretraining? (95% intervals; dotted: chance)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
