"""Model selection: the candidates, their training under one budget, and the rule that picks one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from annlib.data.studies import Study
from annlib.experiments import train_model
from annlib.pretrained import weights_file
from annlib.profiles import get_profile
from annlib.records import load_json

log = logging.getLogger(__name__)

# Self-designed families at two widths each, then MobileNetV2 in its three training modes.
CANDIDATES = (
    "sepnet-8",
    "sepnet-32",
    "vgg-8",
    "vgg-32",
    "resnet-small-8",
    "resnet-small-32",
    "mobilenetv2-head",
    "mobilenetv2-finetune",
    "mobilenetv2-scratch",
)
PRETRAINED = ("mobilenetv2-head", "mobilenetv2-finetune")


def budget(profile: str) -> int:
    """Return the epochs every candidate trains for under a profile (the same for all)."""
    return get_profile(profile).epochs_for("selection")


def train_candidate(
    model: str,
    study: Study,
    profile: str,
    seed: int = 0,
    weights: str | Path | None = None,
    retrain: bool = False,
    output_dir: str | Path | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Train one candidate with the shared recipe and the selection budget (cached by seed).

    precision is the study's (annlib.experiments.study_precision), so that every candidate and
    the baselines train alike.
    """
    options = {"weights": weights_file(weights)} if model in PRETRAINED else None
    return train_model(
        model,
        study,
        profile,
        f"select-s{seed}",
        retrain,
        output_dir,
        model_options=options,
        epochs=budget(profile),
        seed=seed,
        precision=precision,
    )


def seed_summary(histories: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per model: mean, spread and count of best validation accuracy over seeds."""
    runs = pd.DataFrame(
        {
            "model": h["model"],
            "seed": h["config"]["seed"],
            "best_val_accuracy": h["best_val_accuracy"],
            "train_seconds": h["train_seconds"],
        }
        for h in histories
    )
    grouped = runs.groupby("model", sort=False)
    return pd.DataFrame(
        {
            "val_accuracy": grouped.best_val_accuracy.mean(),
            "val_spread": grouped.best_val_accuracy.max() - grouped.best_val_accuracy.min(),
            "seeds": grouped.seed.count(),
            "train_min": grouped.train_seconds.mean() / 60,
        }
    ).reset_index()


def pareto_front(table: pd.DataFrame, cost: str, score: str) -> pd.Series:
    """Return a boolean mask of the rows no other row beats: cheaper or as cheap, and better.

    A row is dominated when another has cost <= its cost and score >= its score, one of them
    strictly.
    """
    costs, scores = table[cost].to_numpy(), table[score].to_numpy()
    dominated = [
        bool(np.any((costs <= c) & (scores >= s) & ((costs < c) | (scores > s))))
        for c, s in zip(costs, scores, strict=True)
    ]
    return pd.Series(np.logical_not(dominated), index=table.index)


def front_runners(table: pd.DataFrame, within: float = 0.01, score: str = "val_accuracy") -> list:
    """Return the candidates whose score is within `within` (1 point) of the best one's."""
    best = table[score].max()
    return table.loc[table[score] >= best - within, "model"].tolist()


@dataclass(frozen=True)
class SelectionRule:
    """The fastest candidate whose mean validation accuracy is within `tolerance` of the best.

    tolerance is the accuracy the study will give up for speed: 0.5 points, or the largest
    seed-to-seed spread among the front-runners if that is larger (differences below the noise
    say nothing). Speed is latency at batch 1; ties go to the higher accuracy.
    """

    tolerance: float = 0.005
    speed: str = "latency_ms"
    score: str = "val_accuracy"

    def apply(self, table: pd.DataFrame, runners: list[str]) -> dict[str, Any]:
        """Return the chosen model and the numbers behind the choice."""
        spread = table.loc[table.model.isin(runners), "val_spread"].max()
        tolerance = max(self.tolerance, float(spread) if pd.notna(spread) else 0.0)
        best = table.loc[table[self.score].idxmax()]
        eligible = table[table[self.score] >= best[self.score] - tolerance]
        chosen = eligible.sort_values([self.speed, self.score], ascending=[True, False]).iloc[0]
        return {
            "rule": self.__doc__.splitlines()[0],
            "tolerance": tolerance,
            "chosen": chosen.model,
            "chosen_val_accuracy": float(chosen[self.score]),
            "chosen_latency_ms": float(chosen[self.speed]),
            "best": best.model,
            "best_val_accuracy": float(best[self.score]),
            "best_latency_ms": float(best[self.speed]),
            "fastest": table.loc[table[self.speed].idxmin(), "model"],
            "fastest_latency_ms": float(table[self.speed].min()),
            "eligible": eligible.model.tolist(),
            "front_runners": list(runners),
        }


SELECTION_FILE = "selection.json"


def load_selection(results: str | Path) -> dict[str, Any]:
    """Return the choice notebook 03 saved in a study's results folder, with a clear error."""
    path = Path(results) / SELECTION_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run notebooks/03_model_selection.ipynb (same profile and study) "
            "first; it saves the chosen model there."
        )
    return load_json(path)


BASELINES = ("lenet5", "resnet50")
FAMILIES = {
    "sepnet": "depthwise-separable",
    "vgg": "VGG-style",
    "resnet-small": "small ResNet",
    "mobilenetv2": "MobileNetV2 (torchvision)",
    "lenet5": "baseline",
    "resnet50": "baseline",
}


def family(model: str) -> str:
    """Return the family a registry model belongs to (its name up to the width or mode)."""
    return next(label for prefix, label in FAMILIES.items() if model.startswith(prefix))


def load_baselines(results: str | Path) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Return notebook 02's baseline table and the baselines' training histories."""
    results = Path(results)
    table_path = results / "baselines.csv"
    paths = {name: results / "train" / f"{name}.json" for name in BASELINES}
    missing = [p for p in (table_path, *paths.values()) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(map(str, missing))} not found: run notebooks/02_baselines.ipynb (same "
            "profile and study) first; it saves the baselines there."
        )
    return pd.read_csv(table_path), {name: load_json(p) for name, p in paths.items()}


def candidate_table(
    seeds: pd.DataFrame,
    costs: pd.DataFrame,
    timing: pd.DataFrame,
    baselines: pd.DataFrame,
    epochs: int,
    large_batch: int,
) -> pd.DataFrame:
    """Return one row per model, candidates and baselines, with accuracy, costs and timings.

    seeds comes from seed_summary, costs has parameters, flops and size_bytes per model, timing
    the faster layout per model and batch (annlib.timing.time_models). Baselines bring their
    own accuracy, training time and timings from notebook 02's table.
    """
    latency = timing[timing.batch == 1].set_index("model")
    bulk = timing[timing.batch == large_batch].set_index("model")
    rows = seeds.assign(
        epochs=epochs,
        latency_ms=seeds.model.map(latency.ms_per_batch),
        images_per_s=seeds.model.map(bulk.images_per_s),
        threads=seeds.model.map(latency.threads),
    )
    base = pd.DataFrame(
        {
            "model": baselines.model,
            "val_accuracy": baselines["best val acc"],
            "val_spread": np.nan,
            "seeds": 1,
            "train_min": baselines["train min (steps only)"],
            "epochs": baselines.epochs,
            "latency_ms": baselines["latency b=1 (ms)"],
            "images_per_s": baselines[f"img/s b={large_batch}"],
            "threads": baselines.threads,
        }
    )
    table = pd.concat([rows, base], ignore_index=True).merge(costs, on="model", how="left")
    table.insert(1, "family", table.model.map(family))
    table["MFLOPs"] = table.pop("flops") / 1e6
    table["size_MB"] = table.pop("size_bytes") / 1e6
    return table
