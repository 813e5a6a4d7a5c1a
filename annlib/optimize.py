"""The final model of notebook 04: the tuned settings trained longer, with several seeds.

The settings come from the accuracy study's best trial (annlib.tuning.best_settings); every seed
is an ordinary cached run of annlib.experiments.train_model, tagged final-s<seed>, so an
interrupted run resumes and a finished one is read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from annlib.data.studies import Study
from annlib.experiments import train_model
from annlib.export import CARD, WEIGHTS
from annlib.models import create_model
from annlib.paths import checkpoints_dir
from annlib.pretrained import architecture, weights_file
from annlib.profiles import get_profile
from annlib.records import load_json
from annlib.selection import PRETRAINED
from annlib.train import BEST

SEEDS = {"smoke": 2, "cpu": 3, "full": 3}


def final_epochs(profile: str) -> int:
    """Return the final model's epoch budget under a profile."""
    return get_profile(profile).epochs_for("final")


def final_seeds(profile: str) -> list[int]:
    """Return the seeds the final model trains with under a profile."""
    return list(range(SEEDS.get(profile, 3)))


def model_options(
    model: str, arch: dict[str, Any], weights: str | Path | None = None
) -> dict[str, Any]:
    """Return the constructor options of the final model: tuned architecture, plus weights."""
    return arch | ({"weights": weights_file(weights)} if model in PRETRAINED else {})


def train_final(
    model: str,
    study: Study,
    profile: str,
    seed: int,
    training: dict[str, Any],
    arch: dict[str, Any],
    precision: str,
    weights: str | Path | None = None,
    retrain: bool = False,
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train (or read back) one seed of the final model; return its history.

    training and arch are the best trial's recipe overrides and architecture options.
    """
    return train_model(
        model,
        study,
        profile,
        f"final-s{seed}",
        retrain,
        output_dir,
        model_options=model_options(model, arch, weights),
        epochs=final_epochs(profile),
        seed=seed,
        precision=precision,
        **training,
    )


def load_trained(
    history: dict[str, Any],
    num_classes: int,
    output_dir: str | Path | None = None,
    exported: str | Path | None = None,
) -> tuple[nn.Module, Path]:
    """Return the model of a finished run with its best weights (evaluation mode), and their file.

    The weights are the run's best.pt checkpoint. Checkpoints stay out of git, so on a fresh
    clone they are taken from the exported model folder `exported` (its weights.pt, which may be
    rounded to float16) when it holds this run. A pretrained model is rebuilt as its
    architecture alone (annlib.pretrained.architecture): its trained weights replace the
    pretrained ones anyway.
    """
    path = checkpoints_dir(history["profile"], output_dir) / history["study"] / history["run"]
    path = path / BEST
    if not path.is_file() and exported is not None:
        card = Path(exported) / CARD
        if card.is_file() and load_json(card).get("run") == history["run"]:
            path = Path(exported) / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the checkpoints of run {history['run']} are not in this checkout "
            "(they stay out of git) and no exported model holds it. Train it again with "
            "retrain=True."
        )
    arch = {k: v for k, v in (history.get("model_options") or {}).items() if k != "weights"}
    net = create_model(architecture(history["model"]), num_classes=num_classes, **arch)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval(), path
