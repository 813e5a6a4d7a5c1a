"""The training loop: history, checkpoints, exact resume after an interruption, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annlib.evaluate import evaluate, predict_logits
from annlib.models import create_model
from annlib.records import load_json
from annlib.train import BEST, CHECKPOINT, TrainConfig, fit, stop_early

CONFIG = TrainConfig(epochs=2, batch_size=64, precision="fp32", eval_batch_size=128)


def fresh_model() -> torch.nn.Module:
    """A narrow VGG-small (batch norm and dropout), initialised from seed 0."""
    torch.manual_seed(0)
    return create_model("vgg-small", width=8)


class Interrupt:
    """on_epoch_end callback that stops the run with KeyboardInterrupt after a given epoch."""

    def __init__(self, after: int) -> None:
        self.after = after

    def __call__(self, history: dict) -> None:
        if len(history["epochs"]) == self.after:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """An uninterrupted run A, and a run B interrupted after epoch 1 then resumed."""
    tmp = tmp_path_factory.mktemp("runs")
    train, val = tiny

    model_a = fresh_model()
    history_a = fit(model_a, train, val, CONFIG, tmp / "a", tmp / "a.json")

    with pytest.raises(KeyboardInterrupt):
        fit(fresh_model(), train, val, CONFIG, tmp / "b", tmp / "b.json", Interrupt(1))
    interrupted = load_json(tmp / "b.json")
    model_b = fresh_model()
    resumed_epochs = []
    history_b = fit(
        model_b,
        train,
        val,
        CONFIG,
        tmp / "b",
        tmp / "b.json",
        lambda history: resumed_epochs.append(history["epochs"][-1]["epoch"]),
    )

    return {
        "tmp": tmp,
        "a": (model_a, history_a),
        "b": (model_b, history_b),
        "interrupted": interrupted,
        "resumed_epochs": resumed_epochs,
    }


def test_interrupted_run_saved_its_first_epoch(runs):
    interrupted = runs["interrupted"]

    assert interrupted["complete"] is False
    assert [r["epoch"] for r in interrupted["epochs"]] == [1]
    assert interrupted["epochs"][0] == runs["a"][1]["epochs"][0] | {
        k: interrupted["epochs"][0][k] for k in ("train_seconds", "eval_seconds")
    }


def test_resumed_run_equals_uninterrupted_run(runs):
    (model_a, history_a), (model_b, history_b) = runs["a"], runs["b"]
    state_a, state_b = model_a.state_dict(), model_b.state_dict()

    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    for field in ("val_accuracy", "val_loss", "train_loss", "train_accuracy", "lr"):
        assert [r[field] for r in history_a["epochs"]] == [r[field] for r in history_b["epochs"]]
    assert history_b["best_epoch"] == history_a["best_epoch"]


def test_resume_is_not_a_restart(runs):
    """The resumed call trains epoch 2 only and keeps epoch 1's row from the checkpoint."""
    history_b = runs["b"][1]

    assert runs["resumed_epochs"] == [2]
    assert [r["epoch"] for r in history_b["epochs"]] == [1, 2]
    assert history_b["epochs"][0] == runs["interrupted"]["epochs"][0]
    assert history_b["epochs"][0]["lr"] != history_b["epochs"][1]["lr"]


def test_history_totals_and_json(runs):
    tmp = runs["tmp"]
    history = runs["a"][1]
    saved = load_json(tmp / "a.json")
    val_accuracy = [r["val_accuracy"] for r in history["epochs"]]

    assert saved["complete"] is True and history["complete"] is True
    assert saved["epochs"] == history["epochs"]
    assert history["epochs_run"] == 2 and history["stopped_early"] is False
    assert history["train_size"] == 512 and history["val_size"] == 256
    assert history["train_seconds"] > 0
    assert history["train_seconds"] == pytest.approx(
        sum(r["train_seconds"] for r in history["epochs"])
    )
    assert history["train_images_per_s"] == pytest.approx(1024 / history["train_seconds"])
    assert history["best_val_accuracy"] == max(val_accuracy)
    assert history["best_epoch"] == 1 + val_accuracy.index(max(val_accuracy))
    assert history["config"]["batch_size"] == 64 and history["bf16"] is False
    assert {"cpu", "torch", "torch_threads"} <= history["environment"].keys()
    for row in history["epochs"]:
        assert row["train_images"] == 512  # 8 full batches of 64, the last one dropped if short
        assert 0 <= row["val_accuracy"] <= 1 and row["val_loss"] > 0
        assert row["eval_seconds"] > 0


def test_checkpoints_are_complete(runs):
    tmp = runs["tmp"]
    model_a = runs["a"][0]

    for run in ("a", "b"):
        folder = tmp / run
        assert sorted(p.name for p in folder.iterdir()) == sorted([BEST, CHECKPOINT])
        checkpoint = torch.load(folder / CHECKPOINT, weights_only=False)
        assert len(checkpoint["history"]["epochs"]) == 2
        assert {"model", "optimizer", "scheduler", "generator", "torch_rng", "best"} <= set(
            checkpoint
        )
    assert not list(tmp.glob("**/*.part")) and not list(tmp.glob("**/.*.part"))

    best = torch.load(tmp / "a" / BEST)
    for key, value in model_a.state_dict().items():
        assert torch.equal(best[key], value), key


def test_model_ends_with_its_best_weights(runs, tiny):
    model, history = runs["a"]
    _, val = tiny

    metrics = evaluate(model, *val, CONFIG.eval_batch_size, channels_last=True)

    assert metrics["accuracy"] == history["best_val_accuracy"]


def test_finished_run_is_not_trained_again(runs, tiny):
    train, val = tiny
    model = fresh_model()
    calls = []

    history = fit(model, train, val, CONFIG, runs["tmp"] / "a", on_epoch_end=calls.append)

    assert calls == []
    assert history["complete"] and history["epochs"] == runs["a"][1]["epochs"]
    for key, value in runs["a"][0].state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_early_stopping_rule():
    rows = [{"epoch": e} for e in range(1, 6)]

    assert not stop_early([], {"epoch": 0}, 2)
    assert not stop_early(rows[:3], {"epoch": 2}, 2)
    assert stop_early(rows[:4], {"epoch": 2}, 2)
    assert not stop_early(rows, {"epoch": 1}, None)


def test_precision_must_be_known():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16").use_bf16()
    assert TrainConfig(precision="fp32").use_bf16() is False
    assert TrainConfig(precision="bf16").use_bf16() is True


def test_evaluate_matches_a_manual_count():
    torch.manual_seed(0)
    model = create_model("lenet5")
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (70, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 47, 70)

    logits = predict_logits(model, X, batch_size=32)
    metrics = evaluate(model, X, y, batch_size=32)
    with torch.no_grad():
        direct = model(torch.from_numpy(X).float().div(255).unsqueeze(1))

    assert logits.shape == (70, 47)
    torch.testing.assert_close(logits, direct, rtol=1e-5, atol=1e-5)
    manual = (direct.argmax(1).numpy() == y).mean()
    assert metrics["accuracy"] == pytest.approx(manual)
    expected = torch.nn.functional.cross_entropy(direct, torch.from_numpy(y)).item()
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert not model.training
