"""The models notebook 05 sets beside the final model on the test set, and their saved scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from annlib.export import CARD, ModelFolderError, load_torch_model, read_card
from annlib.optimize import load_trained
from annlib.selection import BASELINES

MATCH_COLUMNS = ["model", "weights", "weights_val_accuracy", "test_n"]
SCORE_COLUMNS = ["test_n", "test_accuracy", "test_low", "test_high"]
TIMING_COLUMNS = ["onnx_latency_ms", "onnx_images_per_s"]
RETEST = "retest"


def comparison_runs(front_runners: Sequence[str]) -> list[tuple[str, str]]:
    """Return (model, tag) of the runs notebook 05 compares: baselines, front-runners' seed 0."""
    return [(m, "" if m in BASELINES else "select-s0") for m in (*BASELINES, *front_runners)]


def retest_tag(tag: str) -> str:
    """Return the tag of the copy of a run trained again (its exported folder has that run name)."""
    return f"{tag}-{RETEST}" if tag else RETEST


def comparison_model(
    history: dict[str, Any],
    retest: str | Path,
    num_classes: int,
    output_dir: str | Path | None = None,
) -> tuple[nn.Module | None, dict[str, Any]]:
    """Return a comparison run's model (None if no weights are here) and which weights those are.

    The run's own checkpoint comes first; else the copy trained again and exported to `retest`
    (tools/retrain_comparison.py). A folder holding the copy's card but not its weights (too
    large for git) gives None with the card's details, so that an earlier score can be matched.
    """
    try:
        net, _ = load_trained(history, num_classes, output_dir)
        own = {"weights": "run's checkpoint", "weights_val_accuracy": history["best_val_accuracy"]}
        return net, own
    except FileNotFoundError:
        pass
    retest = Path(retest)
    if not (retest / CARD).is_file():
        return None, {"weights": "not in this checkout"}
    card = read_card(retest)
    source = {
        "weights": f"retrained ({retest.name})",
        "weights_val_accuracy": card["validation_accuracy"],
    }
    try:
        return load_torch_model(retest, card), source
    except ModelFolderError:
        return None, source


def earlier_score(table: pd.DataFrame | None, row: dict[str, Any]) -> dict[str, float] | None:
    """Return the test score and ONNX timing an earlier table holds for the same weights, or None.

    A match has the same model, the same weights with the same validation accuracy, and the same
    number of test images (MATCH_COLUMNS, all in row). The timing comes from that earlier run.
    """
    missing = set(MATCH_COLUMNS) - set(row)
    if missing:
        raise ValueError(f"row lacks {sorted(missing)}: pass the comparison row as it is saved.")
    if table is None or not {*MATCH_COLUMNS, *SCORE_COLUMNS} <= set(table.columns):
        return None

    same = table["test_accuracy"].notna()
    for column in MATCH_COLUMNS:
        if isinstance(row[column], str):
            same &= table[column] == row[column]
        else:
            same &= np.isclose(table[column].astype(float), float(row[column]), rtol=0, atol=1e-9)
    match = table[same]
    if match.empty:
        return None
    kept = [c for c in (*SCORE_COLUMNS, *TIMING_COLUMNS) if c in table.columns]
    score = {column: float(match[column].iloc[0]) for column in kept}
    return score | {"test_n": int(score["test_n"])}
