"""EMNIST data: official files, IDX parsing, the studies and their split, in-memory batches."""

from annlib.data.files import (
    COUNTS,
    OFFICIAL,
    PARTS,
    SPLITS,
    EmnistFileError,
    check_files,
    data_dir,
    download_emnist,
    file_name,
    locate,
)
from annlib.data.idx import read_images, read_labels, read_mapping
from annlib.data.loader import Augment, Batches, prepare, to_tensors
from annlib.data.studies import (
    STUDIES,
    Study,
    TestSetLockedError,
    available_studies,
    build_study,
    default_study,
    fold_labels,
    subsample,
)

__all__ = [
    "COUNTS",
    "OFFICIAL",
    "PARTS",
    "SPLITS",
    "STUDIES",
    "Augment",
    "Batches",
    "EmnistFileError",
    "Study",
    "TestSetLockedError",
    "available_studies",
    "build_study",
    "check_files",
    "data_dir",
    "default_study",
    "download_emnist",
    "file_name",
    "fold_labels",
    "locate",
    "prepare",
    "read_images",
    "read_labels",
    "read_mapping",
    "subsample",
    "to_tensors",
]
