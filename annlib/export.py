"""Saving a final model as weights, ONNX and a model card, and loading it back to predict.

A model folder (models/<name>/ by default) holds weights.pt (the state_dict), model.onnx (fp32),
model-int8.onnx when an int8 model is given, and model_card.json: everything needed to rebuild
the model and to feed it correctly, with the accuracy and speed it was measured at.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch
from torch import nn

from annlib.data.loader import prepare
from annlib.inference import INPUT_NAME, OUTPUT_NAME, check_images, export_onnx, onnx_runner
from annlib.models import create_model
from annlib.paths import project_root
from annlib.records import atomic_path, environment, load_json, save_json
from annlib.timing import hardware

log = logging.getLogger(__name__)

CARD, WEIGHTS, ONNX_FP32, ONNX_INT8 = (
    "model_card.json",
    "weights.pt",
    "model.onnx",
    "model-int8.onnx",
)
BACKENDS = {"torch": WEIGHTS, "onnx": ONNX_FP32, "onnx-int8": ONNX_INT8}
ORIENTATIONS = ("official", "upright")
HOW_TO_SAVE = (
    "Run notebooks/04_optimization.ipynb, which exports the study's final model under models/, "
    "or create it with annlib.export.save_model(model, model_name, characters, folder) from a "
    "trained model."
)

PREPROCESSING = {
    "dtype": "uint8",
    "shape": [28, 28],
    "orientation": (
        "The model expects upright characters. The official EMNIST files store every image "
        "transposed (column by column); transpose such images (swap the two pixel axes) first. "
        "Predictor.predict does this when orientation='official', the default."
    ),
    "scaling": "Divide by 255 to float32 in [0, 1].",
    "normalization": "None: no mean subtraction, no division by a standard deviation.",
    "tensor": "float32 (N, 1, 28, 28), batch axis dynamic in the ONNX files.",
}


class ModelFolderError(FileNotFoundError):
    """A model folder, or a file its model card names, is missing."""


def default_folder(name: str) -> Path:
    """Return the folder a model of this name is saved to by default: models/<name>/."""
    return project_root() / "models" / name


def jsonable_rows(performance: pd.DataFrame | Sequence[dict] | None) -> list[dict]:
    """Return timing rows as a list of dicts with None where a table holds NaN."""
    if performance is None:
        return []
    table = pd.DataFrame(performance)
    return table.astype(object).where(table.notna(), None).to_dict("records")


def file_bytes(source: bytes | str | os.PathLike | None) -> bytes | None:
    """Return the bytes of an ONNX model given as bytes or as a path."""
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


def save_model(
    model: nn.Module,
    model_name: str,
    characters: Sequence[str],
    folder: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    options: dict[str, Any] | None = None,
    validation_accuracy: float | None = None,
    performance: pd.DataFrame | Sequence[dict] | None = None,
    deployment: dict | None = None,
    onnx_int8: bytes | str | os.PathLike | None = None,
    weights_dtype: torch.dtype = torch.float32,
    run: str | None = None,
) -> Path:
    """Save weights, ONNX model(s) and model card under folder (default models/<name>/).

    name defaults to the folder's name, or to model_name when no folder is given. model_name
    and options are the registry name and constructor keywords that rebuild the
    model (annlib.models.create_model); they are checked here by loading the weights into a
    rebuilt model, so a wrong option fails now rather than at load time. performance takes the
    rows of annlib.inference.compare_forms (or timing rows), deployment a DeploymentRule's
    choice. weights_dtype torch.float16 halves weights.pt (floating tensors are rounded to
    float16 and loaded back as float32); the ONNX files are exported from the model as given.
    run names the training run the weights come from. Every file is written atomically, the
    card last.
    """
    if folder is None:
        name = name or model_name
        folder = default_folder(name)
    folder = Path(folder)
    name = name or folder.name
    options = dict(options or {})
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    rebuilt = create_model(model_name, num_classes=len(characters), **options)
    rebuilt.load_state_dict(state)
    stored = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state.items()}

    with atomic_path(folder / WEIGHTS) as tmp:
        torch.save(stored, tmp)
    with atomic_path(folder / ONNX_FP32) as tmp:
        tmp.write_bytes(export_onnx(rebuilt))
    int8 = file_bytes(onnx_int8)
    if int8 is not None:
        with atomic_path(folder / ONNX_INT8) as tmp:
            tmp.write_bytes(int8)

    card = {
        "name": name,
        "run": run,
        "model": model_name,
        "options": options,
        "num_classes": len(characters),
        "characters": list(characters),
        "input": PREPROCESSING,
        "output": "float32 logits (N, num_classes); class i is characters[i].",
        "files": {
            "weights": WEIGHTS,
            "onnx": ONNX_FP32,
            "onnx_int8": ONNX_INT8 if int8 is not None else None,
        },
        "onnx_io": {"input": INPUT_NAME, "output": OUTPUT_NAME},
        "weights_dtype": str(weights_dtype).removeprefix("torch."),
        "validation_accuracy": validation_accuracy,
        "performance": {"hardware": hardware(), "rows": jsonable_rows(performance)},
        "deployment": deployment,
        "environment": {**environment(), "onnx": onnx.__version__},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    save_json(folder / CARD, card)
    log.info("Saved %s to %s", name, folder)
    return folder


@dataclass(frozen=True)
class Prediction:
    """Predictions for N images: the top class of each and its top-k classes.

    classes, probabilities: (N,); top_classes, top_probabilities: (N, k); characters and
    top_characters are the same classes as characters.
    """

    classes: np.ndarray
    characters: list[str]
    probabilities: np.ndarray
    top_classes: np.ndarray
    top_characters: list[list[str]]
    top_probabilities: np.ndarray


def upright_images(images: np.ndarray, orientation: str) -> np.ndarray:
    """Return uint8 images (N, 28, 28) the right way up; a single (28, 28) image becomes N = 1.

    'official' means as stored in the EMNIST files, each image transposed; 'upright' means
    already the right way up (as annlib.data.read_images returns them).
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, not {orientation!r}.")
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 pixels 0..255 as in the EMNIST files, not {images.dtype}; "
            "pass the raw pixels, not images already divided by 255."
        )
    if images.ndim == 2:
        images = images[None]
    check_images(images)
    if orientation == "official":
        images = images.transpose(0, 2, 1)
    return np.ascontiguousarray(images)


@dataclass
class Predictor:
    """A saved model ready to predict on uint8 images, with its card and chosen backend."""

    card: dict[str, Any]
    backend: str
    logits_of: Callable[[torch.Tensor], torch.Tensor]

    @property
    def characters(self) -> list[str]:
        """Return the character of each class."""
        return list(self.card["characters"])

    @torch.inference_mode()
    def logits(
        self, images: np.ndarray, orientation: str = "official", batch_size: int = 1024
    ) -> torch.Tensor:
        """Return float32 logits (N, classes) of uint8 images (N, 28, 28) or one (28, 28)."""
        X = torch.from_numpy(upright_images(images, orientation)).unsqueeze(1)
        chunks = [
            self.logits_of(prepare(X[start : start + batch_size]))
            for start in range(0, len(X), batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, len(self.characters))

    def probabilities(
        self, images: np.ndarray, orientation: str = "official", batch_size: int = 1024
    ) -> np.ndarray:
        """Return the class probabilities (N, classes) of uint8 images as a float32 array."""
        return torch.softmax(self.logits(images, orientation, batch_size), dim=1).numpy()

    def predict(
        self, images: np.ndarray, orientation: str = "official", top_k: int = 5
    ) -> Prediction:
        """Return the top class, its probability and the top_k classes of every image."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}.")
        probabilities = torch.softmax(self.logits(images, orientation), dim=1)
        top_p, top_c = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
        chars = self.characters
        top_classes = top_c.numpy()
        return Prediction(
            classes=top_classes[:, 0].copy(),
            characters=[chars[c] for c in top_classes[:, 0]],
            probabilities=top_p[:, 0].numpy().copy(),
            top_classes=top_classes,
            top_characters=[[chars[c] for c in row] for row in top_classes],
            top_probabilities=top_p.numpy(),
        )


def required_file(folder: Path, name: str | None, what: str) -> Path:
    """Return folder/name, raising ModelFolderError that says how to create it if absent."""
    path = folder / name if name else None
    if path is None or not path.is_file():
        raise ModelFolderError(f"{folder} has no {what} ({name or 'none saved'}). {HOW_TO_SAVE}")
    return path


def read_card(folder: str | os.PathLike) -> dict[str, Any]:
    """Return a model folder's card, with an error that says how to create what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"No model folder at {folder}. {HOW_TO_SAVE}")
    return load_json(required_file(folder, CARD, "model card"))


def load_torch_model(folder: Path, card: dict[str, Any]) -> nn.Module:
    """Return a folder's model rebuilt from the registry with weights.pt, in evaluation mode."""
    path = required_file(folder, card["files"]["weights"], "weights")
    model = create_model(card["model"], num_classes=card["num_classes"], **card["options"])
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def fp32_onnx(folder: Path, card: dict[str, Any]) -> bytes:
    """Return the folder's float32 ONNX model, exported again from weights.pt when it is absent.

    The file stays out of git (it is the largest), so a fresh clone rebuilds it on first use and
    keeps it in the folder; where the folder cannot be written it is rebuilt each time.
    """
    path = folder / card["files"]["onnx"]
    if path.is_file():
        return path.read_bytes()
    log.info("%s is absent: exporting it again from %s", path, card["files"]["weights"])
    model_bytes = export_onnx(load_torch_model(folder, card))
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(model_bytes)
    except OSError as error:
        log.warning("could not keep the rebuilt %s (%s); it is rebuilt on every load", path, error)
    return model_bytes


def load_model(folder: str | os.PathLike, backend: str = "torch") -> Predictor:
    """Return a Predictor for a saved model folder.

    backend 'torch' rebuilds the model from the registry and loads weights.pt; 'onnx' and
    'onnx-int8' run model.onnx or model-int8.onnx with ONNX Runtime on the CPU (model.onnx is
    exported again from weights.pt where it is missing).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}.")
    folder = Path(folder)
    card = read_card(folder)

    if backend == "torch":
        model = load_torch_model(folder, card)
        return Predictor(card, backend, lambda x: model(x).float())
    if backend == "onnx":
        return Predictor(card, backend, onnx_runner(fp32_onnx(folder, card)))
    path = required_file(folder, card["files"]["onnx_int8"], f"{backend} model")
    return Predictor(card, backend, onnx_runner(path.read_bytes()))


# The Predictor backend that runs each deployment form saved in a model folder.
FORM_BACKENDS = {"onnxruntime-int8": "onnx-int8", "onnxruntime-fp32": "onnx"}


def deployed_backend(folder: str | os.PathLike) -> str:
    """Return the backend of a model folder's deployment form (torch for forms run by torch)."""
    form = (read_card(folder).get("deployment") or {}).get("form")
    return FORM_BACKENDS.get(form, "torch")


def find_model_folder(root: str | os.PathLike | None = None) -> Path:
    """Return the one model folder under root (default models/), with a clear error otherwise."""
    root = Path(root) if root is not None else project_root() / "models"
    folders = sorted(p.parent for p in root.glob(f"*/{CARD}"))
    if len(folders) == 1:
        return folders[0]
    if not folders:
        raise ModelFolderError(
            f"No exported model under {root}: run notebooks/04_optimization.ipynb, which "
            "exports one there, or give the model folder."
        )
    names = ", ".join(f.name for f in folders)
    raise ModelFolderError(f"Several models under {root} ({names}): say which one to use.")
