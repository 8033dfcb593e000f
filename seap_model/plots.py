"""Plots a person looks at: loss curves and spectrograms (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


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


def plot_spectrograms(
    logmels: list[torch.Tensor], titles: list[str], path: Path, hop_seconds: float, columns: int = 4
) -> None:
    """Log-mel spectrograms in a grid (e.g. one row per item: reference, SEAP, text-only, real)."""
    rows = -(-len(logmels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(logmels) :]:
        ax.axis("off")
    for ax, mel, title in zip(axes.flat, logmels, titles):
        ax.imshow(
            mel.cpu().float().numpy(),
            origin="lower",
            aspect="auto",
            extent=(0, mel.shape[-1] * hop_seconds, 0, mel.shape[0]),
            cmap="magma",
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("s")
        ax.set_ylabel("mel bin")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
