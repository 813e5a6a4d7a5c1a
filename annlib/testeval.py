"""Metrics of a test pass: accuracy with its bootstrap interval, per-class results, confusions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, top_k_accuracy_score

from annlib.data.studies import absent_from, image_keys

BOOT_BATCH_VALUES = 4_000_000  # resampled values held in memory at once by the bootstrap


def check_labels(y_true: np.ndarray, n_classes: int, name: str = "y_true") -> np.ndarray:
    """Return labels as a 1-D int64 array, or raise if they are empty or outside 0..n_classes-1."""
    y = np.asarray(y_true)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D array of class indices, got shape {y.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}.")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(
            f"{name} holds classes outside 0..{n_classes - 1}: pass labels in the index space "
            "of the characters (and of the probabilities' columns)."
        )
    return y.astype(np.int64, copy=False)


def check_same(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return true and predicted labels as arrays: 1-D, non-empty and of one length."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or len(y_true) == 0 or y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must be non-empty 1-D label arrays of one length, got shapes "
            f"{y_true.shape} and {y_pred.shape}: predict exactly the labelled images, in order."
        )
    return y_true, y_pred


def check_pair(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, ...]:
    """Return true and predicted labels checked for the same length and a valid class range."""
    y_true, y_pred = check_same(y_true, y_pred)
    return check_labels(y_true, n_classes, "y_true"), check_labels(y_pred, n_classes, "y_pred")


def check_probabilities(probabilities: np.ndarray, n: int | None = None) -> np.ndarray:
    """Return probabilities as a 2-D float array (images, classes), checked against n images."""
    p = np.asarray(probabilities)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(
            f"probabilities must be a non-empty 2-D array (images, classes), got shape {p.shape}: "
            "pass the softmax of the logits, not the predicted classes."
        )
    if n is not None and p.shape[0] != n:
        raise ValueError(
            f"probabilities has {p.shape[0]} rows but there are {n} labels: give one row per "
            "labelled image, in the same order."
        )
    return p


def bootstrap_interval(
    correct: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Return the (low, high) percentile bootstrap interval of the accuracy of correct (0/1).

    Resamples are drawn in batches (scipy.stats.bootstrap), so memory stays bounded by about
    BOOT_BATCH_VALUES values whatever the number of images.
    """
    correct = np.asarray(correct)
    if correct.ndim != 1 or len(correct) == 0:
        raise ValueError(
            f"correct must be a non-empty 1-D array (1 where a prediction is right), got shape "
            f"{correct.shape}."
        )
    if not 0 < level < 1:
        raise ValueError(f"level is a confidence level between 0 and 1 (e.g. 0.95), not {level}.")
    if n_boot < 1:
        raise ValueError(f"n_boot must be a positive number of resamples, not {n_boot}.")

    batch = max(1, BOOT_BATCH_VALUES // len(correct))
    result = stats.bootstrap(
        (correct.astype(np.float64),),
        np.mean,
        n_resamples=n_boot,
        batch=batch,
        vectorized=True,
        confidence_level=level,
        method="percentile",
        rng=seed,
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Return the share of images whose predicted class is the true one."""
    y_true, y_pred = check_same(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def macro_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Return the class-averaged accuracy: the mean recall over the classes present in y_true."""
    y_true, y_pred = check_same(y_true, y_pred)
    return float(balanced_accuracy_score(y_true, y_pred))


def top_k_accuracy(y_true: np.ndarray, probabilities: np.ndarray, k: int = 5) -> float:
    """Return the share of images whose true class is among the k most probable ones."""
    p = check_probabilities(probabilities, len(np.asarray(y_true)))
    y_true = check_labels(y_true, p.shape[1])
    if not 1 <= k <= p.shape[1]:
        raise ValueError(f"k must be between 1 and the {p.shape[1]} classes, not {k}.")
    return float(top_k_accuracy_score(y_true, p, k=k, labels=np.arange(p.shape[1])))


def confusion(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, normalize: bool = True
) -> np.ndarray:
    """Return the (n_classes, n_classes) confusion matrix, rows true classes, columns predicted.

    With normalize, each row is divided by its class's support (a row without images stays 0).
    """
    y_true, y_pred = check_pair(y_true, y_pred, n_classes)
    return confusion_matrix(
        y_true, y_pred, labels=np.arange(n_classes), normalize="true" if normalize else None
    )


def per_class_table(
    y_true: np.ndarray, y_pred: np.ndarray, characters: Sequence[str]
) -> pd.DataFrame:
    """Return one row per class: label, character, support, correct and accuracy (recall)."""
    counts = confusion(y_true, y_pred, len(characters), normalize=False)
    support = counts.sum(axis=1)
    correct = np.diag(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, correct / np.maximum(support, 1), np.nan)
    return pd.DataFrame(
        {
            "label": np.arange(len(characters)),
            "character": list(characters),
            "support": support,
            "correct": correct,
            "accuracy": recall,
        }
    )


def confused_pairs(
    y_true: np.ndarray, y_pred: np.ndarray, characters: Sequence[str], top: int | None = 20
) -> pd.DataFrame:
    """Return the most frequent confusions: true, predicted, count, share of the true class.

    Largest count first (ties by true then predicted label, also given as class indices); the
    diagonal (correct predictions) and pairs that never occur are left out; top=None keeps all.
    """
    counts = confusion(y_true, y_pred, len(characters), normalize=False)
    support = counts.sum(axis=1)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    true, pred = np.nonzero(off)
    chars = np.asarray(characters, dtype=object)
    table = pd.DataFrame(
        {
            "true": chars[true],
            "predicted": chars[pred],
            "count": off[true, pred],
            "share": off[true, pred] / support[true],
            "true_label": true,
            "predicted_label": pred,
        }
    )
    table = table.sort_values(
        ["count", "true_label", "predicted_label"], ascending=[False, True, True], kind="stable"
    )
    return (
        table.head(top).reset_index(drop=True) if top is not None else table.reset_index(drop=True)
    )


def summarize(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    characters: Sequence[str],
    k: int = 5,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Return the headline numbers of a test pass as a JSON-ready dict of plain floats and ints.

    Keys: n, classes, accuracy with its bootstrap interval (accuracy_low, accuracy_high at
    interval_level), macro_accuracy, top_k_accuracy (k capped at the number of classes), errors.
    """
    p = check_probabilities(probabilities, len(np.asarray(y_true)))
    if p.shape[1] != len(characters):
        raise ValueError(
            f"probabilities has {p.shape[1]} columns but there are {len(characters)} characters: "
            "the columns must be the classes of the characters, in order."
        )
    y_true = check_labels(y_true, p.shape[1])
    y_pred = p.argmax(axis=1)
    correct = y_pred == y_true
    k = min(k, p.shape[1])

    low, high = bootstrap_interval(correct, n_boot, level, seed)
    return {
        "n": int(len(y_true)),
        "classes": int(len(characters)),
        "accuracy": float(correct.mean()),
        "accuracy_low": low,
        "accuracy_high": high,
        "interval_level": float(level),
        "bootstrap_resamples": int(n_boot),
        "macro_accuracy": macro_accuracy(y_true, y_pred),
        "top_k": int(k),
        "top_k_accuracy": top_k_accuracy(y_true, p, k),
        "errors": int((~correct).sum()),
    }


def seen_mask(X_test: np.ndarray, *X_seen: np.ndarray) -> np.ndarray:
    """Return a boolean mask of the test images that also occur, pixel for pixel, in any X_seen."""
    X_test = np.asarray(X_test)
    if X_test.ndim < 2 or len(X_test) == 0:
        raise ValueError(f"X_test must be a non-empty stack of images, got shape {X_test.shape}.")
    if not X_seen:
        raise ValueError("Name at least one image array to compare X_test with.")
    keys: set[bytes] = set()
    for i, X in enumerate(X_seen):
        X = np.asarray(X)
        if X.shape[1:] != X_test.shape[1:] or X.dtype != X_test.dtype:
            raise ValueError(
                f"Image array {i} has images of shape {X.shape[1:]} and dtype {X.dtype}, X_test "
                f"{X_test.shape[1:]} and {X_test.dtype}: bring both to one form (e.g. upright "
                "uint8 28x28) first, or no image can match."
            )
        keys |= image_keys(np.ascontiguousarray(X))
    return ~absent_from(np.ascontiguousarray(X_test), keys)


def remove_seen(
    X: np.ndarray, y: np.ndarray, *X_seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Return X and y without the images that occur in any X_seen, and how many were removed."""
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} images but y {len(y)} labels: pass matching arrays.")
    seen = seen_mask(X, *X_seen)
    return X[~seen], y[~seen], int(seen.sum())


def restrict_to(probabilities: np.ndarray, allowed_classes: Sequence[int]) -> np.ndarray:
    """Return, per image, the most probable class among allowed_classes (full index space).

    For a test file with fewer classes than the model (EMNIST-MNIST: digits only), this scores
    the model as a digit classifier: the other classes are simply not candidates.
    """
    p = check_probabilities(probabilities)
    allowed = np.asarray(allowed_classes)
    if allowed.ndim != 1 or len(allowed) == 0 or not np.issubdtype(allowed.dtype, np.integer):
        raise ValueError("allowed_classes must be a non-empty list of class indices (integers).")
    if allowed.min() < 0 or allowed.max() >= p.shape[1]:
        raise ValueError(
            f"allowed_classes must lie in 0..{p.shape[1] - 1}, the model's classes; got "
            f"{allowed.min()}..{allowed.max()}."
        )
    allowed = np.unique(allowed)
    return allowed[p[:, allowed].argmax(axis=1)]


def scored(correct: np.ndarray) -> dict[str, float]:
    """Return the number of images, the accuracy and its bootstrap interval of correct (0/1)."""
    low, high = bootstrap_interval(correct)
    return {
        "test_n": len(correct),
        "test_accuracy": float(np.mean(correct)),
        "test_low": low,
        "test_high": high,
    }


PUBLISHED_COLUMNS = [
    "source",
    "reference",
    "split",
    "method",
    "test_accuracy",
    "spread",
    "parameters",
    "ms_per_image",
    "hardware",
    "training_data",
    "test_data",
    "not_like_for_like",
]


def beside_published(
    published: pd.DataFrame,
    summary: dict,
    split: str,
    parameters: int,
    training_data: str,
    hardware: str,
) -> pd.DataFrame:
    """Return this study's accuracy and class-averaged accuracy above the published results.

    The class-averaged row stands in for a class-balanced test set such as EMNIST-Balanced.
    ms_per_image divides a whole test pass by its images, for every row that gives both.
    """
    missing = {"source", "split", "method", "test_accuracy"} - set(published.columns)
    if missing:
        raise ValueError(
            f"The published results lack the columns {sorted(missing)}: keep the header of "
            "data/published_results.csv."
        )
    published = published.copy()
    if {"test_seconds", "test_images"} <= set(published.columns):
        published["ms_per_image"] = published["test_seconds"] * 1000 / published["test_images"]

    model = summary.get("model", "final model")
    ours = {
        "source": "this study",
        "reference": "results/ of this repository",
        "split": split,
        "parameters": parameters,
        "ms_per_image": summary["seconds"] * 1000 / summary["n"],
        "hardware": hardware,
        "training_data": training_data,
        "test_data": f"all {summary['n']:,} images of the study's test partition",
    }
    rows = [
        ours | {"method": f"{model}, accuracy", "test_accuracy": summary["accuracy"]},
        ours
        | {
            "method": f"{model}, class-averaged accuracy",
            "test_accuracy": summary["macro_accuracy"],
            "not_like_for_like": "the stand-in for a class-balanced test set such as Balanced",
        },
    ]
    table = pd.concat([pd.DataFrame(rows), published], ignore_index=True)
    table["parameters"] = table["parameters"].astype("Int64")
    return table.reindex(columns=PUBLISHED_COLUMNS)
