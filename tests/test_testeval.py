"""Test-pass metrics on small hand-checked arrays; the MNIST-in-ByMerge overlap on real files."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from annlib import testeval
from annlib.paths import project_root

CHARS = ["a", "b", "c"]
# 10 images: class a (4): 3 right, 1 as b; class b (3): 1 right, 2 as c; class c (3): all right
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])


def one_hot_probabilities(y_pred: np.ndarray, n_classes: int, second: np.ndarray) -> np.ndarray:
    """Return probabilities whose most probable class is y_pred and second most probable second."""
    p = np.full((len(y_pred), n_classes), 0.05)
    p[np.arange(len(y_pred)), second] = 0.25
    p[np.arange(len(y_pred)), y_pred] = 0.6
    return p / p.sum(axis=1, keepdims=True)


def test_accuracy_and_macro_accuracy_by_hand():
    assert testeval.accuracy(Y_TRUE, Y_PRED) == pytest.approx(7 / 10)
    assert testeval.macro_accuracy(Y_TRUE, Y_PRED) == pytest.approx((3 / 4 + 1 / 3 + 3 / 3) / 3)


def test_confusion_counts_and_rows():
    counts = testeval.confusion(Y_TRUE, Y_PRED, 3, normalize=False)
    np.testing.assert_array_equal(counts, [[3, 1, 0], [0, 1, 2], [0, 0, 3]])
    rows = testeval.confusion(Y_TRUE, Y_PRED, 3)
    np.testing.assert_allclose(rows, [[0.75, 0.25, 0], [0, 1 / 3, 2 / 3], [0, 0, 1]])


def test_confusion_row_of_an_absent_class_is_zero():
    rows = testeval.confusion(np.array([0, 0]), np.array([0, 1]), 3)
    np.testing.assert_allclose(rows, [[0.5, 0.5, 0], [0, 0, 0], [0, 0, 0]])


def test_per_class_table():
    table = testeval.per_class_table(Y_TRUE, Y_PRED, CHARS)
    assert table.character.tolist() == CHARS
    assert table.support.tolist() == [4, 3, 3]
    assert table.correct.tolist() == [3, 1, 3]
    np.testing.assert_allclose(table.accuracy, [0.75, 1 / 3, 1.0])


def test_confused_pairs_largest_first_without_diagonal():
    pairs = testeval.confused_pairs(Y_TRUE, Y_PRED, CHARS)
    assert list(zip(pairs.true, pairs.predicted, pairs["count"], strict=True)) == [
        ("b", "c", 2),
        ("a", "b", 1),
    ]
    np.testing.assert_allclose(pairs.share, [2 / 3, 1 / 4])
    assert len(testeval.confused_pairs(Y_TRUE, Y_PRED, CHARS, top=1)) == 1
    assert testeval.confused_pairs(Y_TRUE, Y_TRUE, CHARS).empty


def test_top_k_accuracy():
    second = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0])  # a's miss and one of b's: right second
    p = one_hot_probabilities(Y_PRED, 3, second)
    assert testeval.top_k_accuracy(Y_TRUE, p, k=1) == pytest.approx(0.7)
    assert testeval.top_k_accuracy(Y_TRUE, p, k=2) == pytest.approx(0.9)


def test_top_k_counts_classes_missing_from_y_true():
    p = one_hot_probabilities(np.array([2, 2]), 4, np.array([3, 0]))
    assert testeval.top_k_accuracy(np.array([0, 0]), p, k=2) == pytest.approx(0.5)


def test_bootstrap_interval_contains_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.random(400) < 0.8
    large = rng.random(40_000) < 0.8
    lo_s, hi_s = testeval.bootstrap_interval(small)
    lo_l, hi_l = testeval.bootstrap_interval(large)
    assert lo_s <= small.mean() <= hi_s
    assert lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5  # width falls as 1/sqrt(n): 10x here
    # the normal approximation: half-width about 1.96 * sqrt(p(1-p)/n)
    assert (hi_l - lo_l) / 2 == pytest.approx(1.96 * np.sqrt(0.16 / 40_000), rel=0.15)


def test_bootstrap_interval_is_seeded_and_degenerate_when_all_right():
    correct = np.arange(500) % 3 > 0
    assert testeval.bootstrap_interval(correct, seed=3) == testeval.bootstrap_interval(
        correct, seed=3
    )
    assert testeval.bootstrap_interval(np.ones(50, bool)) == (1.0, 1.0)


def test_bootstrap_interval_of_a_full_test_set_takes_seconds():
    correct = np.random.default_rng(0).random(116_323) < 0.9
    start = time.perf_counter()
    low, high = testeval.bootstrap_interval(correct, n_boot=1000)
    assert time.perf_counter() - start < 30  # about 1 s on an idle core
    assert low < correct.mean() < high


def test_summarize_is_json_ready():
    second = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0, 0])
    summary = testeval.summarize(Y_TRUE, one_hot_probabilities(Y_PRED, 3, second), CHARS, k=2)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["n"] == 10 and summary["errors"] == 3
    assert summary["accuracy"] == pytest.approx(0.7)
    assert summary["macro_accuracy"] == pytest.approx((3 / 4 + 1 / 3 + 1) / 3)
    assert summary["top_k"] == 2 and summary["top_k_accuracy"] == 1.0
    assert summary["accuracy_low"] <= summary["accuracy"] <= summary["accuracy_high"]


def test_seen_mask_finds_exactly_the_planted_duplicates():
    rng = np.random.default_rng(0)
    X_test = rng.integers(0, 256, (200, 28, 28), dtype=np.uint8)
    other = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    planted_a, planted_b = [3, 17, 150], [42, 199]
    seen_a = np.concatenate([other[:20], X_test[planted_a]])
    seen_b = np.concatenate([X_test[planted_b], other[20:]])
    mask = testeval.seen_mask(X_test, seen_a, seen_b)
    assert mask.dtype == bool and mask.shape == (200,)
    assert np.flatnonzero(mask).tolist() == sorted(planted_a + planted_b)

    near = X_test[[5]].copy()
    near[0, 0, 0] ^= 1  # one pixel off is a different image
    assert not testeval.seen_mask(X_test, near).any()

    labels = np.arange(200)
    X_kept, y_kept, removed = testeval.remove_seen(X_test, labels, seen_a, seen_b)
    assert removed == 5 and len(X_kept) == len(y_kept) == 195
    assert not set(planted_a + planted_b) & set(y_kept.tolist())


def test_restrict_to_never_returns_a_disallowed_class():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(47), size=500)
    digits = list(range(10))
    restricted = testeval.restrict_to(p, digits)
    assert set(restricted.tolist()) <= set(digits)
    np.testing.assert_array_equal(restricted, p[:, :10].argmax(axis=1))
    odd = testeval.restrict_to(p, [45, 3, 20])
    assert set(odd.tolist()) <= {3, 20, 45}
    np.testing.assert_array_equal(odd, np.array([3, 20, 45])[p[:, [3, 20, 45]].argmax(axis=1)])


def test_beside_published_puts_this_study_first_and_times_per_image():
    published = pd.DataFrame({
        "source": ["a paper"], "split": ["balanced"], "method": ["cnn"],
        "test_accuracy": [0.91], "test_seconds": [5.0], "test_images": [20_000],
    })  # fmt: skip
    summary = {"n": 1000, "accuracy": 0.9, "macro_accuracy": 0.88, "seconds": 0.5, "model": "m"}
    table = testeval.beside_published(published, summary, "bymerge", 12, "1,000 images", "cpu")
    assert list(table.columns) == testeval.PUBLISHED_COLUMNS
    assert table["source"].tolist() == ["this study", "this study", "a paper"]
    assert table["test_accuracy"].tolist() == [0.9, 0.88, 0.91]
    assert table["ms_per_image"].tolist() == pytest.approx([0.5, 0.5, 0.25])
    with pytest.raises(ValueError, match="data/published_results.csv"):
        testeval.beside_published(published.drop(columns="method"), summary, "b", 1, "", "")


def test_the_published_results_file_names_a_source_and_a_caveat_per_row():
    published = pd.read_csv(project_root() / "data" / "published_results.csv")
    assert len(published) > 0
    assert published["test_accuracy"].between(0.5, 1).all()
    assert set(published["split"]) <= {"bymerge", "balanced", "byclass"}
    for column in ("source", "reference", "method", "not_like_for_like"):
        assert published[column].notna().all(), column


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: testeval.accuracy(np.array([0, 1]), np.array([0])), "one length"),
        (lambda: testeval.macro_accuracy(np.array([]), np.array([])), "non-empty"),
        (lambda: testeval.confusion(np.array([0, 3]), np.array([0, 1]), 3), "outside 0..2"),
        (lambda: testeval.top_k_accuracy(np.array([0, 1]), np.ones(2), 1), "2-D"),
        (lambda: testeval.top_k_accuracy(np.array([0, 1]), np.ones((3, 2)), 1), "3 rows"),
        (lambda: testeval.summarize(np.array([0]), np.ones((1, 2)), CHARS), "2 columns"),
        (lambda: testeval.bootstrap_interval(np.array([])), "non-empty"),
        (lambda: testeval.bootstrap_interval(np.ones(5), level=95), "between 0 and 1"),
        (lambda: testeval.restrict_to(np.ones((2, 10)), [0, 10]), "0..9"),
        (lambda: testeval.restrict_to(np.ones((2, 10)), []), "non-empty"),
        (lambda: testeval.restrict_to(np.ones(10), [0]), "2-D"),
        (
            lambda: testeval.seen_mask(np.zeros((0, 28, 28), np.uint8), np.zeros((1, 28, 28))),
            "empty",
        ),
        (
            lambda: testeval.seen_mask(
                np.zeros((2, 28, 28), np.uint8), np.zeros((2, 784), np.uint8)
            ),
            "one form",
        ),
        (lambda: testeval.seen_mask(np.zeros((2, 28, 28), np.uint8)), "at least one"),
        (
            lambda: testeval.remove_seen(np.zeros((2, 4, 4)), np.zeros(3), np.zeros((1, 4, 4))),
            "matching",
        ),
    ],
)
def test_bad_input_says_what_to_do(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_mnist_test_images_seen_in_the_bymerge_test_file(emnist_file, bymerge_test):
    """The data README's count: 1,479 EMNIST-MNIST test images occur in the ByMerge test file."""
    from annlib.data import read_images, read_labels

    root = emnist_file("emnist-mnist-test-images-idx3-ubyte.gz").parent
    emnist_file("emnist-mnist-test-labels-idx1-ubyte.gz")
    X_mnist, y_mnist = read_images("mnist", "test", root), read_labels("mnist", "test", root)
    X_bymerge = bymerge_test[0]

    assert int(testeval.seen_mask(X_mnist, X_bymerge).sum()) == 1479
    _, y_kept, removed = testeval.remove_seen(X_mnist, y_mnist, X_bymerge)
    assert removed == 1479 and len(y_kept) == 10_000 - 1479


def test_confusion_plot_and_gallery_write_pngs(tmp_path):
    from annlib import plots

    matrix = testeval.confusion(Y_TRUE, Y_PRED, 3)
    plots.confusion_plot(matrix, CHARS, tmp_path / "confusion.png")
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    plots.misclassified_gallery(images, ["a", "b", "b"], ["b", "c", "c"], tmp_path / "g.png", 2)
    for name in ("confusion.png", "g.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="3x3"):
        plots.confusion_plot(matrix[:2], CHARS)
    with pytest.raises(ValueError, match="one of each"):
        plots.misclassified_gallery(images, ["a"], ["b"])
