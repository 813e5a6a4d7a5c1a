"""Shared fixtures: where the official EMNIST files are, and the bymerge-small study built once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from annlib.data import subsample
from annlib.paths import project_root

ENV_VAR = "ANNLIB_TEST_DATA"
DEFAULT_DATA = project_root().parent / "shared" / "data" / "emnist"


def data_location() -> Path:
    """Return where the tests read EMNIST: $ANNLIB_TEST_DATA, else ../shared/data/emnist."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DATA).expanduser()


def skip_without(folder: Path, *names: str) -> None:
    """Skip the calling test unless every named file is in folder."""
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        pytest.skip(
            f"EMNIST files not found at {folder} ({', '.join(missing)}); set {ENV_VAR} "
            "to a folder holding the official .gz files"
        )


WEIGHTS_VAR = "ANNLIB_TEST_WEIGHTS"
DEFAULT_WEIGHTS = project_root().parent / "shared" / "weights"


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """The folder of pretrained weights ($ANNLIB_TEST_WEIGHTS, else ../shared/weights)."""
    from annlib.pretrained import MOBILENET_V2_FILE

    folder = Path(os.environ.get(WEIGHTS_VAR) or DEFAULT_WEIGHTS).expanduser()
    if not (folder / MOBILENET_V2_FILE).is_file():
        pytest.skip(f"{MOBILENET_V2_FILE} not found in {folder}; set {WEIGHTS_VAR}")
    return folder


@pytest.fixture(scope="session")
def emnist_dir() -> Path:
    """The folder of official EMNIST files; tests that need it skip when it is absent."""
    folder = data_location()
    if not folder.is_dir() or not any(folder.glob("emnist-*")):
        pytest.skip(f"EMNIST files not found at {folder}; set {ENV_VAR}")
    return folder


@pytest.fixture
def emnist_file(emnist_dir):
    """Return a function giving the path of one official file, skipping the test if it is absent."""

    def get(name: str) -> Path:
        skip_without(emnist_dir, name)
        return emnist_dir / name

    return get


@pytest.fixture(scope="session")
def study(emnist_dir):
    """The bymerge-small study (about 3 s to build), shared by every test that needs it."""
    from annlib.data import build_study

    skip_without(
        emnist_dir,
        "emnist-byclass-test-images-idx3-ubyte.gz",
        "emnist-byclass-test-labels-idx1-ubyte.gz",
        "emnist-bymerge-test-images-idx3-ubyte.gz",
        "emnist-bymerge-test-labels-idx1-ubyte.gz",
    )
    return build_study("bymerge-small", emnist_dir)


@pytest.fixture(scope="session")
def bymerge_test(emnist_dir) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels and characters of the official ByMerge test file, read straight from disk."""
    from annlib.data import read_images, read_labels, read_mapping

    skip_without(
        emnist_dir,
        "emnist-bymerge-test-images-idx3-ubyte.gz",
        "emnist-bymerge-test-labels-idx1-ubyte.gz",
    )
    return (
        read_images("bymerge", "test", emnist_dir),
        read_labels("bymerge", "test", emnist_dir),
        read_mapping("bymerge", emnist_dir),
    )


@pytest.fixture(scope="session")
def tiny(study):
    """512 training and 256 validation images of the study, stratified."""
    train = subsample(study.X_train, study.y_train, 512, seed=0)
    val = subsample(study.X_val, study.y_val, 256, seed=0)
    return train, val
