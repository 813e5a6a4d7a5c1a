"""Figures of the study: each drawn, saved as a PNG with a stable name, and returned for display."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from annlib.records import atomic_path


def save(fig: Figure, path: str | Path | None) -> Figure:
    """Save a figure as PNG (through a temporary name) if a path is given; return the figure."""
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return fig


def learning_curves(histories: dict[str, dict], path: str | Path | None = None) -> Figure:
    """Plot loss and accuracy per epoch, train (dashed) and validation (solid), one colour a run."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    colors = sns.color_palette("tab10", len(histories))
    for color, (name, history) in zip(colors, histories.items(), strict=True):
        epochs = pd.DataFrame(history["epochs"])
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            ax.plot(epochs.epoch, epochs[f"train_{metric}"], "--", color=color, alpha=0.7)
            ax.plot(epochs.epoch, epochs[f"val_{metric}"], "-o", ms=3, color=color, label=name)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    ax_acc.legend(title="validation (solid), train (dashed)", fontsize=8)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return save(fig, path)


def sample_grid(
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    per_class: int = 6,
    seed: int = 0,
    path: str | Path | None = None,
) -> Figure:
    """Show per_class random images of every class, one column per class, titled by character."""
    rng = np.random.default_rng(seed)
    n = len(classes)
    fig, axes = plt.subplots(per_class, n, figsize=(n * 0.42, per_class * 0.5))
    for c in range(n):
        members = np.flatnonzero(labels == c)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for r in range(per_class):
            ax = axes[r, c]
            ax.axis("off")
            if r < len(chosen):
                ax.imshow(images[chosen[r]], cmap="gray_r", vmin=0, vmax=255)
        axes[0, c].set_title(classes[c], fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return save(fig, path)


def image_grid(
    rows: list[np.ndarray],
    titles: list[list[str]],
    path: str | Path | None = None,
    size: float = 0.9,
) -> Figure:
    """Show rows of images (each row a stack of equal length) with a title over each image."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(n_cols * size, n_rows * size * 1.25), squeeze=False
    )
    for r, (images, names) in enumerate(zip(rows, titles, strict=True)):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c], cmap="gray_r", vmin=0, vmax=255)
                ax.set_title(names[c], fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def class_distribution(counts: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Plot images per class for several partitions; counts has a 'class' column and one per set."""
    long = counts.melt(id_vars="class", var_name="partition", value_name="images")
    fig, ax = plt.subplots(figsize=(14, 4))
    sns.barplot(data=long, x="class", y="images", hue="partition", ax=ax)
    ax.set(xlabel="class (character)", ylabel="images", title="Images per class")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def pixel_histogram(images: dict[str, np.ndarray], path: str | Path | None = None) -> Figure:
    """Plot the distribution of pixel values (log scale) and the mean image of each set."""
    fig, axes = plt.subplots(1, len(images) + 1, figsize=(4 + 2.2 * len(images), 3))
    for name, X in images.items():
        counts = np.bincount(X.ravel(), minlength=256) / X.size
        axes[0].semilogy(counts, label=name)
    axes[0].set(xlabel="pixel value", ylabel="fraction of pixels", title="Pixel values")
    axes[0].legend(fontsize=8)
    for ax, (name, X) in zip(axes[1:], images.items(), strict=True):
        ax.imshow(X.mean(0), cmap="magma")
        ax.set_title(f"mean image: {name}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return save(fig, path)


def learning_curve_grid(
    histories: dict[str, list[dict]],
    path: str | Path | None = None,
    columns: int = 4,
    panel: tuple[float, float] = (3.2, 2.6),
) -> Figure:
    """Plot validation (solid) and training (dashed) accuracy per epoch, one panel per model.

    histories maps a model to its runs (one per seed); all panels share the accuracy axis.
    panel is the width and height of one panel in inches.
    """
    rows = -(-len(histories) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(panel[0] * columns, panel[1] * rows), sharey=True, squeeze=False
    )
    colors = sns.color_palette("tab10")
    for ax, (name, runs) in zip(axes.flat, histories.items(), strict=False):
        for color, history in zip(colors, runs, strict=False):
            epochs = pd.DataFrame(history["epochs"])
            seed = history["config"]["seed"]
            ax.plot(epochs.epoch, epochs.train_accuracy, "--", color=color, alpha=0.6)
            ax.plot(
                epochs.epoch, epochs.val_accuracy, "-o", ms=3, color=color, label=f"seed {seed}"
            )
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.flat[len(histories) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for ax in axes[-1, :]:
        ax.set_xlabel("epoch")
    fig.suptitle("Validation (solid) and training (dashed) accuracy", y=1.0)
    fig.tight_layout()
    return save(fig, path)


def pareto_plot(
    table: pd.DataFrame,
    cost: str,
    score: str,
    front: pd.Series,
    kind: str = "kind",
    chosen: str | None = None,
    xlabel: str = "latency at batch 1 (ms, log scale)",
    path: str | Path | None = None,
    ylabel: str = "best validation accuracy",
    title: str = "Validation accuracy against inference time",
) -> Figure:
    """Plot score against cost (log x), one labelled point per model, the Pareto front as a line.

    `kind` names a column that colours the points (candidate, pretrained, baseline); the chosen
    model, if given, is ringed.
    """
    fig, ax = plt.subplots(figsize=(11, 5.5))
    sns.scatterplot(data=table, x=cost, y=score, hue=kind, style=kind, s=80, ax=ax, zorder=3)
    on_front = table[front].sort_values(cost)
    ax.step(
        on_front[cost],
        on_front[score],
        where="post",
        color="0.3",
        lw=1.2,
        zorder=2,
        label="Pareto front",
    )
    for _, row in table.iterrows():
        ax.annotate(
            row["model"],
            (row[cost], row[score]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    if chosen is not None:
        pick = table[table.model == chosen].iloc[0]
        ax.scatter(
            pick[cost],
            pick[score],
            s=320,
            facecolors="none",
            edgecolors="crimson",
            lw=2,
            zorder=4,
            label=f"chosen: {chosen}",
        )
    ax.set_xscale("log")
    ax.margins(x=0.08, y=0.08)  # room for the labels of the outermost points
    ax.set(
        xlabel=xlabel,
        ylabel=ylabel,
        title=title,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # clear of the points
    fig.tight_layout()
    return save(fig, path)


def confusion_plot(
    matrix: np.ndarray,
    characters: list[str],
    path: str | Path | None = None,
    floor: float = 1e-3,
) -> Figure:
    """Draw a row-normalized confusion matrix on a log colour scale; cells under floor are blank.

    On a linear scale the diagonal (most images) drowns every error; the log scale from floor to 1
    shows confusions of a tenth of a percent of a class beside the correct predictions.
    """
    matrix = np.asarray(matrix, dtype=float)
    n = len(characters)
    if matrix.shape != (n, n):
        raise ValueError(f"matrix must be {n}x{n} for {n} characters, got shape {matrix.shape}.")
    shown = np.ma.masked_less(matrix, floor)

    size = max(4.0, 0.2 * n + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(shown, cmap="viridis", norm=LogNorm(vmin=floor, vmax=1.0))
    ax.set_xticks(range(n), characters, fontsize=7)
    ax.set_yticks(range(n), characters, fontsize=7)
    ax.tick_params(length=0)
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="0.92", lw=0.4)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(f"Confusion matrix: share of each true class (log scale, blank below {floor:g})")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of the true class")
    fig.tight_layout()
    return save(fig, path)


def misclassified_gallery(
    images: np.ndarray,
    true_chars: list[str],
    pred_chars: list[str],
    path: str | Path | None = None,
    columns: int = 10,
) -> Figure:
    """Show upright uint8 images in rows of columns, each titled "true → predicted"."""
    images = np.asarray(images)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"images must be a non-empty stack (N, 28, 28), got shape {images.shape}.")
    if not len(images) == len(true_chars) == len(pred_chars):
        raise ValueError(
            f"{len(images)} images, {len(true_chars)} true and {len(pred_chars)} predicted "
            "characters: give one of each per image."
        )
    titles = [f"{t} → {p}" for t, p in zip(true_chars, pred_chars, strict=True)]
    starts = range(0, len(images), columns)
    return image_grid(
        [images[i : i + columns] for i in starts], [titles[i : i + columns] for i in starts], path
    )
