"""The studies (which files give train, validation and test), the saved split, the leak check."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from annlib.data.files import HOW_TO_GET, EmnistFileError, data_dir, file_name, find_file
from annlib.data.idx import read_images, read_labels, read_mapping
from annlib.paths import project_root
from annlib.records import atomic_path

log = logging.getLogger(__name__)

VAL_FRACTION = 0.1
SPLIT_SEED = 0


@dataclass(frozen=True)
class StudySpec:
    """Where a study's pool (train + validation) and its test set come from."""

    pool: tuple[str, str]
    test: tuple[str, str]
    fold_pool_labels: bool = False
    drop_test_images_from_pool: bool = False
    about: str = ""


STUDIES = {
    "balanced": StudySpec(
        pool=("balanced", "train"),
        test=("balanced", "test"),
        about="EMNIST-Balanced: 47 classes, 2,400 training and 400 test images per class.",
    ),
    "bymerge-small": StudySpec(
        pool=("byclass", "test"),
        test=("bymerge", "test"),
        fold_pool_labels=True,
        drop_test_images_from_pool=True,
        about=(
            "Test: the full official ByMerge test partition. Train and validation: the ByClass "
            "test images absent from it (ByMerge training images), labels folded to the 47 "
            "ByMerge classes."
        ),
    ),
}


class TestSetLockedError(RuntimeError):
    """The test partition was asked for without saying that this is the final evaluation."""


@dataclass
class Study:
    """A study's train and validation arrays, its classes, and a locked test partition.

    Images are upright uint8 (N, 28, 28); labels are int64 class indices into `classes`.
    """

    name: str
    classes: list[str]
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    leakage: dict[str, int]
    split_file: Path
    removed_from_pool: int
    _X_test: np.ndarray = field(repr=False)
    _y_test: np.ndarray = field(repr=False)

    @property
    def n_test(self) -> int:
        """Return the size of the test partition without handing it out."""
        return len(self._y_test)

    def test_class_counts(self) -> np.ndarray:
        """Return images per class in the test partition (counts only, no images)."""
        return np.bincount(self._y_test, minlength=len(self.classes))

    def test(self, final_evaluation: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Return the test images and labels; only the final evaluation may ask for them."""
        if not final_evaluation:
            raise TestSetLockedError(
                "The test partition is used once, in the final evaluation. Make model choices on "
                "the validation data; pass final_evaluation=True only in that last notebook."
            )
        return self._X_test, self._y_test


def available_studies(root: str | os.PathLike | None = None) -> list[str]:
    """Return the studies whose files are all present under root."""
    root = data_dir(root)
    return [name for name, spec in STUDIES.items() if not missing_files(spec, root)]


def default_study(root: str | os.PathLike | None = None) -> str:
    """Return 'balanced' where its files exist, else 'bymerge-small', else raise with the reason."""
    found = available_studies(root)
    if not found:
        need = ", ".join(missing_files(STUDIES["bymerge-small"], data_dir(root)))
        raise EmnistFileError(
            f"No study can run from {data_dir(root)}: missing {need}. Pass --data-dir (or set "
            "ANNLIB_DATA) to the folder holding the EMNIST files. " + HOW_TO_GET
        )
    return found[0]


def missing_files(spec: StudySpec, root: Path) -> list[str]:
    """Return the names of the files a study needs that are absent under root."""
    names = [file_name(s, p, k) for s, p in (spec.pool, spec.test) for k in ("images", "labels")]
    return [n for n in names if find_file(root, n) is None]


def fold_labels(labels: np.ndarray, source: list[str], target: list[str]) -> np.ndarray:
    """Map labels of one split onto another's classes by character, folding case where needed.

    A ByClass lowercase letter that ByMerge merged into its capital (c, i, j, k, ...) maps to the
    capital; every other character maps to itself.
    """
    index = {ch: i for i, ch in enumerate(target)}
    table = np.empty(len(source), dtype=np.int64)
    for i, ch in enumerate(source):
        key = ch if ch in index else ch.upper()
        if key not in index:
            raise ValueError(f"Character {ch!r} has no class among {''.join(target)}.")
        table[i] = index[key]
    return table[labels]


def image_keys(images: np.ndarray) -> set[bytes]:
    """Return the set of raw pixel strings of a stack of images (exact comparison by pixels)."""
    return {img.tobytes() for img in images}


def absent_from(images: np.ndarray, keys: set[bytes]) -> np.ndarray:
    """Return a boolean mask of the images whose pixels are not in keys."""
    return np.fromiter((img.tobytes() not in keys for img in images), bool, len(images))


def count_shared(a: np.ndarray, b: np.ndarray) -> int:
    """Return how many images of a also occur, pixel for pixel, in b."""
    return int((~absent_from(a, image_keys(b))).sum())


def leakage_check(X_train: np.ndarray, X_val: np.ndarray, X_test: np.ndarray) -> dict[str, int]:
    """Return the number of images shared by each pair of partitions (all must be 0)."""
    return {
        "train_val": count_shared(X_val, X_train),
        "train_test": count_shared(X_test, X_train),
        "val_test": count_shared(X_test, X_val),
    }


def pool_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """Return a sha256 of a pool's pixels and labels, so a saved split fits its pool only."""
    digest = hashlib.sha256(images.tobytes())
    digest.update(labels.tobytes())
    return digest.hexdigest()


def split_path(name: str, seed: int, val_fraction: float) -> Path:
    """Return where a study's validation indices are saved (committed with the project)."""
    return project_root() / "data" / "splits" / f"{name}-seed{seed}-val{val_fraction:g}.npz"


def load_or_make_split(
    path: Path, labels: np.ndarray, fingerprint: str, seed: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, val) indices: read from path, or drawn (stratified, seeded) and saved."""
    if path.exists():
        saved = np.load(path)
        if str(saved["fingerprint"]) != fingerprint:
            raise EmnistFileError(
                f"{path} was made for different data than the files found now. Check the data "
                "folder; delete the split file only if the change of data is intended."
            )
        return saved["train"], saved["val"]

    order = np.arange(len(labels))
    train, val = train_test_split(
        order, test_size=val_fraction, stratify=labels, random_state=seed, shuffle=True
    )
    train, val = np.sort(train), np.sort(val)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, train=train, val=val, fingerprint=np.array(fingerprint))
    log.info("saved a new validation split to %s", path)
    return train, val


def build_study(
    name: str | None = None,
    root: str | os.PathLike | None = None,
    seed: int = SPLIT_SEED,
    val_fraction: float = VAL_FRACTION,
) -> Study:
    """Load a study's files, build its train/validation split and check that nothing leaks."""
    root = data_dir(root)
    name = name or default_study(root)
    if name not in STUDIES:
        raise ValueError(f"Unknown study {name!r}: choose one of {', '.join(STUDIES)}.")
    spec = STUDIES[name]

    X_pool = read_images(*spec.pool, root)
    y_pool = read_labels(*spec.pool, root)
    X_test = read_images(*spec.test, root)
    y_test = read_labels(*spec.test, root)
    classes = read_mapping(spec.test[0], root)
    if spec.fold_pool_labels:
        y_pool = fold_labels(y_pool, read_mapping(spec.pool[0], root), classes)
    removed = 0
    if spec.drop_test_images_from_pool:
        keep = absent_from(X_pool, image_keys(X_test))
        X_pool, y_pool = X_pool[keep], y_pool[keep]
        removed = int((~keep).sum())

    path = split_path(name, seed, val_fraction)
    fingerprint = pool_fingerprint(X_pool, y_pool)
    train, val = load_or_make_split(path, y_pool, fingerprint, seed, val_fraction)
    X_train, y_train, X_val, y_val = X_pool[train], y_pool[train], X_pool[val], y_pool[val]

    leakage = leakage_check(X_train, X_val, X_test)
    if any(leakage.values()):
        raise EmnistFileError(
            f"Study {name!r} leaks images between partitions: {leakage}. The data files or the "
            f"saved split {path} are not the ones this study was built for: check both."
        )
    log.info(
        "study %s: %d train, %d val, %d test, no shared images",
        name,
        len(y_train),
        len(y_val),
        len(y_test),
    )
    return Study(
        name, classes, X_train, y_train, X_val, y_val, leakage, path, removed, X_test, y_test
    )


def subsample(X: np.ndarray, y: np.ndarray, n: int | None, seed: int = 0):
    """Return a stratified subset of n images (all of them when n is None or not smaller)."""
    if n is None or n >= len(y):
        return X, y
    idx, _ = train_test_split(
        np.arange(len(y)), train_size=n, stratify=y, random_state=seed, shuffle=True
    )
    idx = np.sort(idx)
    return X[idx], y[idx]
