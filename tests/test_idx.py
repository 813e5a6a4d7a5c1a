"""IDX parsing of the real EMNIST files: counts, labels, mappings, orientation, bad input."""

from __future__ import annotations

import gzip
import shutil
import string
from pathlib import Path

import numpy as np
import pytest

from annlib.data import (
    EmnistFileError,
    check_files,
    data_dir,
    file_name,
    locate,
    read_images,
    read_labels,
    read_mapping,
)
from annlib.data.idx import decompress

MERGED = string.digits + string.ascii_uppercase + "abdefghnqrt"
MNIST_IMAGES = "emnist-mnist-test-images-idx3-ubyte.gz"
MNIST_LABELS = "emnist-mnist-test-labels-idx1-ubyte.gz"


def stored_images(path: Path) -> np.ndarray:
    """Return images exactly as an IDX3 file stores them, parsed without annlib."""
    raw = gzip.decompress(path.read_bytes())
    n = int.from_bytes(raw[4:8], "big")
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, 28, 28)


def ink_box(images: np.ndarray) -> tuple[float, float]:
    """Return the mean height and width of the bounding box of ink (pixels > 127)."""
    ink = images > 127
    return ink.any(2).sum(1).mean(), ink.any(1).sum(1).mean()


def halves(images: np.ndarray) -> dict[str, float]:
    """Return the mean intensity of the top, bottom, left and right halves of the images."""
    x = images.astype(np.float64)
    return {
        "top": x[:, :14].mean(),
        "bottom": x[:, 14:].mean(),
        "left": x[:, :, :14].mean(),
        "right": x[:, :, 14:].mean(),
    }


# Counts, labels and mappings of the real files.


@pytest.mark.parametrize(
    "split, part, count, n_classes",
    [
        ("bymerge", "test", 116_323, 47),
        ("byclass", "test", 116_323, 62),
        ("mnist", "test", 10_000, 10),
        ("letters", "train", 124_800, 26),
        ("letters", "test", 20_800, 26),
        ("balanced", "train", 112_800, 47),
        ("balanced", "test", 18_800, 47),
    ],
)
def test_labels_count_and_range(emnist_file, split, part, count, n_classes):
    root = emnist_file(file_name(split, part, "labels")).parent

    y = read_labels(split, part, root)

    assert y.shape == (count,)
    assert y.dtype == np.int64
    assert y.min() == 0
    assert y.max() == n_classes - 1
    assert len(np.unique(y)) == n_classes


def test_letters_labels_are_shifted_to_start_at_zero(emnist_file):
    path = emnist_file("emnist-letters-test-labels-idx1-ubyte.gz")
    stored = np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=8)

    y = read_labels("letters", "test", path.parent)

    assert stored.min() == 1 and stored.max() == 26
    np.testing.assert_array_equal(y, stored.astype(np.int64) - 1)


@pytest.mark.parametrize(
    "split, count", [("bymerge", 116_323), ("byclass", 116_323), ("mnist", 10_000)]
)
def test_images_count_shape_dtype(emnist_file, bymerge_test, split, count):
    if split == "bymerge":
        X = bymerge_test[0]
    else:
        X = read_images(split, "test", emnist_file(file_name(split, "test", "images")).parent)

    assert X.shape == (count, 28, 28)
    assert X.dtype == np.uint8
    assert X.flags["C_CONTIGUOUS"]
    assert X.max() == 255 and X.min() == 0


def test_bymerge_mapping(emnist_file):
    root = emnist_file("emnist-bymerge-mapping.txt").parent

    chars = read_mapping("bymerge", root)

    assert "".join(chars) == MERGED
    assert len(chars) == 47


def test_letters_and_byclass_mappings(emnist_file):
    root = emnist_file("emnist-letters-mapping.txt").parent
    emnist_file("emnist-byclass-mapping.txt")

    assert read_mapping("letters", root) == list(string.ascii_uppercase)
    assert read_mapping("byclass", root) == list(
        string.digits + string.ascii_uppercase + string.ascii_lowercase
    )
    assert read_mapping("mnist", root) == list(string.digits)


@pytest.mark.parametrize("split", ["bymerge", "byclass", "letters", "mnist", "balanced"])
def test_builtin_mapping_matches_official_file(emnist_dir, tmp_path, split):
    """Without a mapping file (torchvision's layout) the built-in table gives the same classes."""
    path = emnist_dir / f"emnist-{split}-mapping.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")

    assert read_mapping(split, tmp_path) == read_mapping(split, emnist_dir)


# Orientation: the files store images transposed; annlib must hand them out upright.


def test_images_are_the_stored_images_transposed(emnist_file):
    path = emnist_file(MNIST_IMAGES)
    stored = stored_images(path)

    X = read_images("mnist", "test", path.parent)

    np.testing.assert_array_equal(X, stored.transpose(0, 2, 1))
    assert not np.array_equal(X.mean(0), stored.mean(0))


def test_ones_are_taller_than_wide(bymerge_test, emnist_file):
    X, y, chars = bymerge_test
    height, width = ink_box(X[y == chars.index("1")])
    assert height > 1.8 * width

    path = emnist_file(MNIST_IMAGES)
    Xm = read_images("mnist", "test", path.parent)
    ym = read_labels("mnist", "test", emnist_file(MNIST_LABELS).parent)
    height, width = ink_box(Xm[ym == 1])
    assert height > 1.8 * width


def test_upright_characters_have_ink_where_expected(bymerge_test):
    """'7' and 'T' are heavy at the top, 'L' at the bottom left: fails if transposed or flipped."""
    X, y, chars = bymerge_test

    seven = halves(X[y == chars.index("7")])
    assert seven["top"] > 1.5 * seven["bottom"]
    assert seven["right"] > 1.2 * seven["left"]

    tee = halves(X[y == chars.index("T")])
    assert tee["top"] > 2 * tee["bottom"]

    ell = halves(X[y == chars.index("L")])
    assert ell["bottom"] > 1.2 * ell["top"]
    assert ell["left"] > 1.1 * ell["right"]


def test_bymerge_pixels_match_an_independent_parse(bymerge_test, emnist_dir):
    stored = stored_images(emnist_dir / "emnist-bymerge-test-images-idx3-ubyte.gz")

    assert np.array_equal(bymerge_test[0], stored.transpose(0, 2, 1))


# Where files may live.


def test_torchvision_layout_gives_the_same_arrays(emnist_file, tmp_path):
    """Uncompressed copies in EMNIST/raw/ (torchvision's layout) read like the official .gz."""
    images, labels = emnist_file(MNIST_IMAGES), emnist_file(MNIST_LABELS)
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (images, labels):
        (raw / path.name.removesuffix(".gz")).write_bytes(gzip.decompress(path.read_bytes()))

    assert (
        locate("mnist", "test", "images", tmp_path) == raw / "emnist-mnist-test-images-idx3-ubyte"
    )
    np.testing.assert_array_equal(
        read_images("mnist", "test", tmp_path), read_images("mnist", "test", images.parent)
    )
    np.testing.assert_array_equal(
        read_labels("mnist", "test", tmp_path), read_labels("mnist", "test", labels.parent)
    )
    assert read_mapping("mnist", tmp_path) == list(string.digits)


def test_nist_gzip_folder_is_searched(emnist_file, tmp_path):
    labels = emnist_file(MNIST_LABELS)
    (tmp_path / "gzip").mkdir()
    shutil.copy(labels, tmp_path / "gzip" / labels.name)

    assert locate("mnist", "test", "labels", tmp_path) == tmp_path / "gzip" / labels.name
    assert len(read_labels("mnist", "test", tmp_path)) == 10_000


def test_data_dir_argument_then_env_then_project(monkeypatch, tmp_path):
    from annlib.paths import project_root

    monkeypatch.delenv("ANNLIB_DATA", raising=False)
    assert data_dir() == project_root() / "data"
    monkeypatch.setenv("ANNLIB_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"


# Bad input.


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(EmnistFileError, match="emnist-mnist-test-images-idx3-ubyte.gz"):
        read_images("mnist", "test", tmp_path)
    with pytest.raises(EmnistFileError, match="emnist-letters-train-labels-idx1-ubyte.gz"):
        read_labels("letters", "train", tmp_path)


def test_truncated_gz_is_rejected(emnist_file, tmp_path):
    data = emnist_file(MNIST_LABELS).read_bytes()
    (tmp_path / MNIST_LABELS).write_bytes(data[: len(data) // 2])

    with pytest.raises(EmnistFileError, match="truncated"):
        read_labels("mnist", "test", tmp_path)


def test_corrupt_gz_of_the_right_size_fails_the_sha256(emnist_file, tmp_path):
    data = bytearray(emnist_file(MNIST_LABELS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / MNIST_LABELS).write_bytes(bytes(data))

    with pytest.raises(EmnistFileError, match="sha256"):
        read_labels("mnist", "test", tmp_path)


def test_incomplete_gzip_stream_is_an_emnist_error():
    data = gzip.compress(bytes(range(256)) * 40)

    with pytest.raises(EmnistFileError, match="not a complete gzip"):
        decompress(Path("x.gz"), data[: len(data) // 2])
    with pytest.raises(EmnistFileError, match="not a complete gzip"):
        decompress(Path("x.gz"), b"not gzip at all")


def write_raw(root: Path, name: str, data: bytes) -> Path:
    """Write an uncompressed IDX file where torchvision keeps it."""
    folder = root / "EMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name.removesuffix(".gz")
    path.write_bytes(data)
    return path


@pytest.fixture
def raw_labels(emnist_file) -> bytes:
    """The uncompressed bytes of the EMNIST-MNIST test labels."""
    return gzip.decompress(emnist_file(MNIST_LABELS).read_bytes())


@pytest.fixture
def raw_images(emnist_file) -> bytes:
    """The uncompressed bytes of the EMNIST-MNIST test images."""
    return gzip.decompress(emnist_file(MNIST_IMAGES).read_bytes())


def test_uncompressed_wrong_magic(raw_labels, tmp_path):
    write_raw(tmp_path, MNIST_LABELS, (2051).to_bytes(4, "big") + raw_labels[4:])

    with pytest.raises(EmnistFileError, match="magic number 2051"):
        read_labels("mnist", "test", tmp_path)


def test_images_file_given_as_labels_is_rejected(raw_images, tmp_path):
    write_raw(tmp_path, MNIST_LABELS, raw_images)

    with pytest.raises(EmnistFileError, match="magic number"):
        read_labels("mnist", "test", tmp_path)


def test_uncompressed_truncated_body(raw_images, tmp_path):
    write_raw(tmp_path, MNIST_IMAGES, raw_images[:-784])

    with pytest.raises(EmnistFileError, match="truncated"):
        read_images("mnist", "test", tmp_path)


def test_uncompressed_too_short_for_a_header(tmp_path):
    write_raw(tmp_path, MNIST_IMAGES, b"\x00\x00\x08\x03")

    with pytest.raises(EmnistFileError, match="too short"):
        read_images("mnist", "test", tmp_path)


def test_uncompressed_wrong_count(raw_labels, tmp_path):
    header = raw_labels[:4] + (9_999).to_bytes(4, "big")
    write_raw(tmp_path, MNIST_LABELS, header + raw_labels[8:-1])

    with pytest.raises(EmnistFileError, match="9,999 items"):
        read_labels("mnist", "test", tmp_path)


def test_labels_out_of_range(raw_labels, tmp_path):
    data = bytearray(raw_labels)
    data[8 + 17] = 10
    write_raw(tmp_path, MNIST_LABELS, bytes(data))

    with pytest.raises(EmnistFileError, match=r"outside 0\.\.9"):
        read_labels("mnist", "test", tmp_path)


def test_unknown_split_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="balanced, byclass, bymerge, digits, letters, mnist"):
        read_images("bymerged", "test", tmp_path)
    with pytest.raises(ValueError, match="Unknown EMNIST split"):
        read_mapping("emnist", tmp_path)
    with pytest.raises(ValueError, match="partition"):
        file_name("mnist", "val", "images")
    with pytest.raises(ValueError, match="kind"):
        file_name("mnist", "test", "pixels")


# The file check behind `annlib check-data`.


def test_check_files_statuses(emnist_file, tmp_path):
    labels = emnist_file(MNIST_LABELS)
    shutil.copy(labels, tmp_path / labels.name)
    corrupt = bytearray(emnist_file("emnist-mnist-mapping.txt").read_bytes())
    corrupt[0] ^= 1
    (tmp_path / "emnist-mnist-mapping.txt").write_bytes(bytes(corrupt))
    write_raw(tmp_path, MNIST_IMAGES, b"anything")

    status = {c.name: c.status for c in check_files(tmp_path)}

    assert len(status) == 6 * 2 * 2 + 6
    assert status[MNIST_LABELS] == "ok"
    assert status["emnist-mnist-mapping.txt"].startswith("CORRUPT")
    assert status[MNIST_IMAGES].startswith("present")
    assert status["emnist-bymerge-test-images-idx3-ubyte.gz"] == "missing"
