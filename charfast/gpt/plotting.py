"""The loss-curve PNG of a training run, drawn from its metrics.jsonl records."""

from __future__ import annotations

import os


def plot_loss_curve(records: list[dict], path: str | os.PathLike, title: str = "") -> None:
    """Train loss per step and val loss at eval steps, one PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib import pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), label="val", marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
