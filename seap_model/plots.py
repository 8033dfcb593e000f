"""Training plots a person looks at: loss curves (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_losses(history: dict, path: Path) -> None:
    """Training and validation loss against step."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if history.get("train"):
        steps, losses = zip(*[(r[0], r[1]) for r in history["train"]])
        ax.plot(steps, losses, label="train (running mean)")
    if history.get("val"):
        steps, losses = zip(*history["val"])
        ax.plot(steps, losses, label="val (EMA, fixed noise)")
    ax.set_xlabel("step")
    ax.set_ylabel("Min-SNR weighted loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
