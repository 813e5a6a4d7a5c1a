"""Cached training runs: the same call trains once and afterwards reads the saved history."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from annlib import distributed
from annlib.data.studies import Study, subsample
from annlib.models import create_model, model_summary
from annlib.paths import checkpoints_dir, results_dir
from annlib.profiles import get_profile
from annlib.records import load_json
from annlib.train import TrainConfig, fit, same_settings, seed_everything

log = logging.getLogger(__name__)

# The shared recipe: AdamW with a one-cycle schedule, light augmentation, early stopping.
RECIPE = TrainConfig()


def run_name(model: str, tag: str = "") -> str:
    """Return the name a run is saved under: the model, plus a tag for variants."""
    return f"{model}-{tag}" if tag else model


def history_path(study: str, profile: str, name: str, output_dir=None) -> Path:
    """Return where a run's history JSON lives."""
    return results_dir(profile, output_dir) / study / "train" / f"{name}.json"


def train_model(
    model: str,
    study: Study,
    profile: str,
    tag: str = "",
    retrain: bool = False,
    output_dir: str | Path | None = None,
    model_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a registry model on a study under a profile, or return the saved history of that run.

    overrides replace fields of the shared recipe (lr, epochs, precision, seed, ...);
    model_options go to the model's constructor (weights=... for a pretrained one). A run
    interrupted part-way resumes from its checkpoint the next time it is asked for. Under
    torch.distributed every process calls this alike; rank 0 decides whether a saved run is reused.
    """
    prof = get_profile(profile)
    name = run_name(model, tag)
    path = history_path(study.name, profile, name, output_dir)
    config = replace(RECIPE, **({"epochs": prof.epochs_for(model)} | overrides))
    saved = load_json(path) if path.exists() and not retrain and distributed.is_main() else None
    history = distributed.broadcast_object(saved)
    options = {k: describe_option(v) for k, v in (model_options or {}).items()}
    if history is not None and history.get("complete"):
        if not same_settings(history, config) or (history.get("model_options") or {}) != options:
            raise ValueError(
                f"The saved run {name} ({path}) used other settings than asked for now: give "
                "this variant its own tag, or pass retrain=True to replace the saved run."
            )
        log.info("read saved run %s from %s", name, path)
        return history

    train = subsample(study.X_train, study.y_train, prof.train_images, config.seed)
    val = subsample(study.X_val, study.y_val, prof.val_images, 0)
    run_dir = checkpoints_dir(profile, output_dir) / study.name / name
    if retrain and distributed.is_main():
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)

    seed_everything(config.seed)
    net = create_model(model, num_classes=len(study.classes), **(model_options or {}))
    info = {"run": name, "study": study.name, "profile": profile} | model_summary(model, net)
    info["model_options"] = options
    return fit(net, train, val, config, run_dir, path, info=info)


def describe_option(value: Any) -> Any:
    """Return a model option as saved in a history: a path by its file name, others as they are."""
    return Path(value).name if isinstance(value, Path) else value


# bfloat16 counts as matching float32 when the gap is within float32's seed-to-seed spread, and
# never needs to be closer than this (0.2 points), which two seeds cannot resolve.
MIN_PRECISION_TOLERANCE = 0.002


def compare_precision(
    study: Study,
    profile: str,
    epochs: int,
    retrain: bool = False,
    output_dir: str | Path | None = None,
    model: str = "lenet5",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train a model in float32 (two seeds) and bfloat16 (one); return the table and the decision.

    bfloat16 is chosen only where the CPU runs it natively and its accuracy is within the float32
    seed spread (at least MIN_PRECISION_TOLERANCE) of the float32 mean. "Natively" is read from the
    bfloat16 run's own record: a comparison read back on other hardware keeps the decision made
    where it ran, so a study does not change precision half-way because its machine changed.
    """
    rows = []
    native = False
    for precision, seed in (("fp32", 0), ("fp32", 1), ("bf16", 0)):
        h = train_model(
            model,
            study,
            profile,
            f"{precision}-e{epochs}-s{seed}",
            retrain,
            output_dir,
            epochs=epochs,
            precision=precision,
            seed=seed,
        )
        rows.append(
            {
                "precision": precision,
                "seed": seed,
                "epochs": h["epochs_run"],
                "best_val_accuracy": h["best_val_accuracy"],
                "train_images_per_s": h["train_images_per_s"],
            }
        )
        if precision == "bf16":
            native = bool(h["environment"]["bf16_native"])
    table = pd.DataFrame(rows)

    fp32 = table[table.precision == "fp32"]
    bf16 = table[table.precision == "bf16"].iloc[0]
    spread = fp32.best_val_accuracy.max() - fp32.best_val_accuracy.min()
    gap = fp32.best_val_accuracy.mean() - bf16.best_val_accuracy
    same = abs(gap) <= max(spread, MIN_PRECISION_TOLERANCE)
    decision = {
        "bf16_native": native,
        "accuracy_gap": gap,
        "fp32_seed_spread": spread,
        "tolerance": max(spread, MIN_PRECISION_TOLERANCE),
        "bf16_speed_vs_fp32": bf16.train_images_per_s / fp32.train_images_per_s.mean(),
        "same_accuracy": bool(same),
        "precision": "bf16" if native and same else "fp32",
    }
    return table, decision


PRECISION_FILE = "precision_decision.json"


def study_precision(results: str | Path) -> str:
    """Return the training precision notebook 02 decided for a study (bf16 or fp32)."""
    path = Path(results) / PRECISION_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run notebooks/02_baselines.ipynb (same profile and study) first; "
            "it decides the training precision there."
        )
    return load_json(path)["precision"]
