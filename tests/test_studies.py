"""Label folding, the saved stratified split, the leak check and the locked test partition."""

from __future__ import annotations

import string

import numpy as np
import pytest

from annlib.data import (
    EmnistFileError,
    available_studies,
    build_study,
    default_study,
    fold_labels,
    read_images,
    read_labels,
    read_mapping,
    subsample,
)
from annlib.data import TestSetLockedError as LockedError
from annlib.data.studies import load_or_make_split, pool_fingerprint

BYCLASS = list(string.digits + string.ascii_uppercase + string.ascii_lowercase)
BYMERGE = list(string.digits + string.ascii_uppercase + "abdefghnqrt")


# Folding ByClass labels onto the ByMerge classes.


def test_fold_labels_by_character():
    folded = fold_labels(np.arange(62), BYCLASS, BYMERGE)
    as_chars = {src: BYMERGE[dst] for src, dst in zip(BYCLASS, folded, strict=True)}

    assert folded.dtype == np.int64
    assert sorted(set(folded.tolist())) == list(range(47))
    for ch in string.digits + string.ascii_uppercase + "abdefghnqrt":
        assert as_chars[ch] == ch
    for ch in "cijklmopsuvwxyz":
        assert as_chars[ch] == ch.upper()
    assert as_chars["c"] == "C" and as_chars["o"] == "O" and as_chars["a"] == "a"


def test_fold_labels_keeps_shape_and_order():
    labels = np.array([[38, 0], [36, 50]])  # c, 0 / a, o

    np.testing.assert_array_equal(fold_labels(labels, BYCLASS, BYMERGE), [[12, 0], [36, 24]])


def test_fold_labels_rejects_a_character_without_a_class():
    with pytest.raises(ValueError, match="'\\?'"):
        fold_labels(np.array([0]), ["?"], ["A", "B"])


def test_folded_byclass_labels_equal_bymerge_labels_on_shared_images(emnist_file, bymerge_test):
    """The study's premise: where ByClass and ByMerge test files share an image, folding agrees."""
    root = emnist_file("emnist-byclass-test-images-idx3-ubyte.gz").parent
    X_merge, y_merge, merge_chars = bymerge_test
    X_class = read_images("byclass", "test", root)
    y_class = fold_labels(
        read_labels("byclass", "test", root), read_mapping("byclass", root), merge_chars
    )

    merged = {img.tobytes(): label for img, label in zip(X_merge, y_merge, strict=True)}
    pairs = [
        (merged[img.tobytes()], label)
        for img, label in zip(X_class, y_class, strict=True)
        if img.tobytes() in merged
    ]

    assert len(pairs) == 16_478
    assert all(a == b for a, b in pairs)


# The split: seeded, stratified, saved, tied to its pool.


def test_split_is_deterministic_and_saved(tmp_path):
    labels = np.repeat(np.arange(5), [100, 200, 50, 300, 350])
    path = tmp_path / "splits" / "s.npz"

    train, val = load_or_make_split(path, labels, "fp", seed=3, val_fraction=0.1)
    again = load_or_make_split(path, labels, "fp", seed=3, val_fraction=0.1)
    fresh = load_or_make_split(tmp_path / "other.npz", labels, "fp", seed=3, val_fraction=0.1)
    reseeded = load_or_make_split(tmp_path / "seed4.npz", labels, "fp", seed=4, val_fraction=0.1)

    assert sorted(p.name for p in path.parent.iterdir()) == ["s.npz"]
    for t, v in (again, fresh):
        np.testing.assert_array_equal(t, train)
        np.testing.assert_array_equal(v, val)
    assert not np.array_equal(reseeded[1], val)
    assert len(val) == 100
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))
    np.testing.assert_array_equal(np.bincount(labels[val]), [10, 20, 5, 30, 35])


def test_saved_split_for_other_data_is_refused(tmp_path):
    labels = np.repeat(np.arange(2), 50)
    path = tmp_path / "s.npz"
    load_or_make_split(path, labels, "fingerprint-a", seed=0, val_fraction=0.1)

    with pytest.raises(EmnistFileError, match="different data"):
        load_or_make_split(path, labels, "fingerprint-b", seed=0, val_fraction=0.1)


def test_pool_fingerprint_sees_pixels_and_labels():
    X = np.zeros((4, 28, 28), np.uint8)
    y = np.arange(4)
    base = pool_fingerprint(X, y)
    X2 = X.copy()
    X2[2, 5, 5] = 1

    assert pool_fingerprint(X.copy(), y.copy()) == base
    assert pool_fingerprint(X2, y) != base
    assert pool_fingerprint(X, y[::-1].copy()) != base


def test_committed_split_is_redrawn_from_its_seed(study, tmp_path):
    """The saved split equals a fresh seeded draw on the study's pool, and fits that pool."""
    saved = np.load(study.split_file)
    n = len(study.y_train) + len(study.y_val)
    y_pool = np.empty(n, np.int64)
    y_pool[saved["train"]] = study.y_train
    y_pool[saved["val"]] = study.y_val
    X_pool = np.empty((n, 28, 28), np.uint8)
    X_pool[saved["train"]] = study.X_train
    X_pool[saved["val"]] = study.X_val

    train, val = load_or_make_split(tmp_path / "s.npz", y_pool, "x", seed=0, val_fraction=0.1)

    assert str(saved["fingerprint"]) == pool_fingerprint(X_pool, y_pool)
    np.testing.assert_array_equal(train, saved["train"])
    np.testing.assert_array_equal(val, saved["val"])


# The bymerge-small study.


def test_study_sizes_and_classes(study):
    assert study.name == "bymerge-small"
    assert study.classes == BYMERGE
    assert len(study.y_train) + len(study.y_val) == 99_845
    assert study.X_train.shape == (len(study.y_train), 28, 28)
    assert study.X_val.shape == (len(study.y_val), 28, 28)
    assert study.X_train.dtype == np.uint8 and study.y_train.dtype == np.int64
    assert set(np.unique(study.y_train)) == set(range(47))
    assert set(np.unique(study.y_val)) == set(range(47))
    assert study.n_test == 116_323
    assert study.test_class_counts().sum() == 116_323
    assert len(study.test_class_counts()) == 47


def test_study_split_is_stratified(study):
    per_train = np.bincount(study.y_train, minlength=47)
    per_val = np.bincount(study.y_val, minlength=47)
    fraction = per_val / (per_train + per_val)

    assert len(study.y_val) / (len(study.y_train) + len(study.y_val)) == pytest.approx(
        0.1, abs=1e-3
    )
    assert np.all(np.abs(fraction - 0.1) < 0.01), fraction


def test_study_partitions_share_no_image(study):
    assert study.leakage == {"train_val": 0, "train_test": 0, "val_test": 0}

    train = {img.tobytes() for img in study.X_train}
    val = {img.tobytes() for img in study.X_val}
    X_test, _ = study.test(final_evaluation=True)

    assert train.isdisjoint(val)
    assert not any(img.tobytes() in train or img.tobytes() in val for img in X_test)


def test_study_test_partition_is_locked(study, bymerge_test):
    with pytest.raises(LockedError, match="final evaluation"):
        study.test()

    X_test, y_test = study.test(final_evaluation=True)

    assert X_test.shape == (116_323, 28, 28)
    np.testing.assert_array_equal(y_test, bymerge_test[1])
    np.testing.assert_array_equal(np.bincount(y_test, minlength=47), study.test_class_counts())


def test_available_and_default_study(emnist_dir, tmp_path):
    balanced = emnist_dir / "emnist-balanced-train-images-idx3-ubyte.gz"
    expected = "balanced" if balanced.is_file() else "bymerge-small"

    assert expected in available_studies(emnist_dir)
    assert default_study(emnist_dir) == expected
    assert available_studies(tmp_path) == []
    with pytest.raises(EmnistFileError, match="emnist-byclass-test-images"):
        default_study(tmp_path)


def test_unknown_study_is_a_value_error(emnist_dir):
    with pytest.raises(ValueError, match="balanced, bymerge-small"):
        build_study("bymerge-large", emnist_dir)


def test_subsample_is_stratified_and_seeded():
    X = np.arange(1000)
    y = np.repeat(np.arange(4), [100, 200, 300, 400])

    Xs, ys = subsample(X, y, 100, seed=1)
    again, _ = subsample(X, y, 100, seed=1)

    np.testing.assert_array_equal(np.bincount(ys), [10, 20, 30, 40])
    np.testing.assert_array_equal(ys, y[Xs])
    np.testing.assert_array_equal(Xs, again)
    assert np.all(np.diff(Xs) > 0)
    assert subsample(X, y, None)[0] is X
    assert subsample(X, y, 5000)[0] is X
