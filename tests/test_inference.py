"""Inference forms: agreement with eager PyTorch, accuracy, the comparison table, the rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from annlib.data.loader import prepare
from annlib.evaluate import evaluate
from annlib.inference import (
    BASELINE,
    CalibrationImages,
    DeploymentRule,
    Form,
    build_forms,
    compare_forms,
    fold_batch_norm,
    form_accuracy,
    form_predictions,
    onnx_ops,
    onnx_speeds,
    thread_sweep,
    with_threads,
)
from annlib.models import NUM_CLASSES, create_model

FAST = ["eager-fp32", "eager-fp32-folded", "channels_last", "bf16"]
ONNX = ["onnxruntime-fp32", "onnxruntime-int8"]


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return n noisy uint8 images of 47 blocky prototypes (one per class), and their labels."""
    prototypes = np.kron(
        np.random.default_rng(0).random((NUM_CLASSES, 7, 7)) > 0.6, np.ones((4, 4))
    )
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    X = prototypes[y] * 200 + rng.normal(0, 40, (n, 28, 28))
    return np.clip(X, 0, 255).astype(np.uint8), y


@pytest.fixture(scope="module")
def data():
    return synthetic(1024, seed=1), synthetic(256, seed=2)


@pytest.fixture(scope="module")
def trained(data) -> nn.Module:
    """vgg-8 after 40 Adam steps on the synthetic prototypes: enough to tell them apart."""
    (X, y), _ = data
    torch.manual_seed(0)
    model = create_model("vgg-8")
    x, target = prepare(torch.from_numpy(X).unsqueeze(1)), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        i = torch.randint(0, len(X), (64,))
        loss = F.cross_entropy(model(x[i]), target[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def forms(trained, data):
    (X, _), _ = data
    return build_forms(trained, X[:256], FAST + ONNX, emulated_bf16=True)


@pytest.fixture(scope="module")
def val_batch(data) -> torch.Tensor:
    _, (X, _) = data
    return prepare(torch.from_numpy(X).unsqueeze(1))


def test_trained_model_is_trained_enough(trained, data):
    _, (X, y) = data

    assert evaluate(trained, X, y)["accuracy"] > 0.9


def test_build_forms_names_and_order(forms):
    assert list(forms) == FAST + ONNX
    assert all(f.available and f.error is None and f.description for f in forms.values())
    assert forms["onnxruntime-fp32"].runtime == "onnxruntime"
    assert forms["onnxruntime-int8"].threads == torch.get_num_threads()


def test_forms_leave_the_callers_model_in_its_mode(trained, data):
    (X, _), _ = data
    trained.train()

    build_forms(trained, X[:64], ["eager-fp32"])

    assert trained.training


@pytest.mark.parametrize("name", ["eager-fp32-folded", "channels_last", "onnxruntime-fp32"])
def test_fp32_forms_match_eager(forms, val_batch, name):
    expected = forms[BASELINE](val_batch)

    for x in (val_batch, val_batch[:1], val_batch[:33]):  # any batch size: dynamic batch axis
        assert torch.allclose(forms[name](x), expected[: len(x)], atol=1e-4, rtol=0)


def test_onnx_export_folded_batch_norm(forms, trained):
    ops = onnx_ops(forms["onnxruntime-fp32"].onnx)

    assert ops.count("Conv") == 4
    assert "BatchNormalization" not in ops
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fold_batch_norm(trained).modules())


def test_bf16_keeps_the_predictions(forms, val_batch):
    expected = forms[BASELINE](val_batch)

    got = forms["bf16"](val_batch)

    assert got.dtype == torch.float32
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.97
    assert torch.allclose(got, expected, atol=0.5)


def test_int8_agrees_with_eager(forms, data):
    _, (X, y) = data
    ops = onnx_ops(forms["onnxruntime-int8"].onnx)

    agreement = np.mean(
        form_predictions(forms["onnxruntime-int8"], X) == form_predictions(forms[BASELINE], X)
    )
    loss = form_accuracy(forms[BASELINE], X, y) - form_accuracy(forms["onnxruntime-int8"], X, y)

    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= set(ops)
    assert agreement >= 0.95
    assert loss <= 0.02


def test_form_accuracy_matches_evaluate(forms, trained, data):
    _, (X, y) = data

    assert form_accuracy(forms[BASELINE], X, y, batch_size=100) == pytest.approx(
        evaluate(trained, X, y)["accuracy"]
    )


def test_forms_take_numpy_and_reject_raw_pixels(forms, val_batch):
    form = forms["onnxruntime-fp32"]

    assert torch.equal(form(val_batch[:4].numpy()), form(val_batch[:4]))
    with pytest.raises(ValueError, match="float32"):
        form(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        form_predictions(form, np.zeros((2, 28, 28), dtype=np.float32))


def test_calibration_reader_batches_and_rewinds(data):
    (X, _), _ = data
    reader = CalibrationImages(X[:150], "images", batch_size=64)

    sizes = [len(feed["images"]) for feed in iter(reader.get_next, None)]
    reader.rewind()
    first = reader.get_next()["images"]

    assert sizes == [64, 64, 22]
    assert first.dtype == np.float32 and first.shape == (64, 1, 28, 28)
    assert 0.0 <= first.min() and first.max() <= 1.0


def test_bf16_is_skipped_without_native_support(trained, data, monkeypatch):
    monkeypatch.setattr("annlib.inference.bf16_native", lambda: False)

    form = build_forms(trained, data[0][0][:8], ["bf16"])["bf16"]

    assert not form.available and "emulated_bf16=True" in form.error


def test_unknown_form_is_refused(trained, data):
    with pytest.raises(ValueError, match="Unknown forms"):
        build_forms(trained, data[0][0][:8], ["tensorrt"])


def test_compile_failure_is_recorded_not_raised(trained, data, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no working C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)

    forms = build_forms(trained, data[0][0][:8], ["eager-fp32", "torch.compile"])
    table = compare_forms(forms, *data[1], batches=(1, 8), min_run_time=0.01)

    assert not forms["torch.compile"].available
    assert "no working C++ compiler" in forms["torch.compile"].error
    with pytest.raises(RuntimeError, match="not available"):
        forms["torch.compile"](torch.zeros(1, 1, 28, 28))
    failed = table[table.form == "torch.compile"]
    assert len(failed) == 2 and failed.images_per_s.isna().all()
    assert failed.error.str.contains("no working C\\+\\+ compiler").all()


def test_compare_forms_table(forms, data):
    _, (X, y) = data
    chosen = {name: forms[name] for name in (BASELINE, "onnxruntime-fp32", "onnxruntime-int8")}

    table = compare_forms(chosen, X, y, batches=(1, 32), min_run_time=0.01)

    assert list(table.form) == [name for name in chosen for _ in (1, 32)]
    assert list(table.batch) == [1, 32] * 3
    base = table[table.form == BASELINE]
    assert np.allclose(base.speedup, 1.0)
    assert np.allclose(base.accuracy_diff_points, 0.0) and np.allclose(base.agreement, 1.0)
    assert (table.ms_per_batch > 0).all() and table.error.isna().all()
    assert np.allclose(table.images_per_s, table.batch / (table.ms_per_batch / 1e3))
    int8 = table[table.form == "onnxruntime-int8"].iloc[0]
    expected = 100 * (form_accuracy(forms["onnxruntime-int8"], X, y) - base.accuracy.iloc[0])
    assert int8.accuracy_diff_points == pytest.approx(expected)


def test_compare_forms_needs_the_baseline(forms, data):
    with pytest.raises(ValueError, match="baseline"):
        compare_forms({"bf16": forms["bf16"]}, *data[1])


def rule_table(rows: list[tuple[str, float, float, float]]) -> pd.DataFrame:
    """Return a comparison-like table from (form, batch-1 ms, large-batch images/s, diff)."""
    records = []
    for form, latency, throughput, diff in rows:
        common = {"form": form, "accuracy": 0.9 + diff / 100, "accuracy_diff_points": diff}
        records.append({**common, "batch": 1, "ms_per_batch": latency, "images_per_s": 1e3})
        records.append(
            {**common, "batch": 512, "ms_per_batch": 512e3 / throughput, "images_per_s": throughput}
        )
    table = pd.DataFrame(records)
    table["speedup"] = table.images_per_s / table.batch.map(
        table[table.form == BASELINE].set_index("batch").images_per_s
    )
    return table


def test_deployment_rule_skips_forms_that_lose_accuracy():
    table = rule_table(
        [
            (BASELINE, 1.0, 1000, 0.0),
            ("onnxruntime-int8", 0.5, 5000, -0.5),
            ("onnxruntime-fp32", 0.4, 3000, -0.1),
        ]
    )

    choice = DeploymentRule().apply(table)

    assert choice["form"] == "onnxruntime-fp32"
    assert choice["images_per_s"] == 3000 and choice["speedup"] == pytest.approx(3.0)
    assert choice["latency_ms"] == 0.4 and choice["latency_batch"] == 1
    assert choice["rejected_for_accuracy"] == ["onnxruntime-int8"]
    assert choice["accuracy_diff_points"] == pytest.approx(-0.1)
    assert DeploymentRule(max_loss_points=1.0).apply(table)["form"] == "onnxruntime-int8"


def test_deployment_rule_breaks_near_ties_by_latency():
    table = rule_table(
        [
            (BASELINE, 1.0, 1000, 0.0),
            ("channels_last", 2.0, 3000, 0.0),
            ("onnxruntime-fp32", 0.3, 2900, 0.0),
        ]
    )

    assert DeploymentRule().apply(table)["form"] == "onnxruntime-fp32"
    assert DeploymentRule().apply(table)["tied"] == ["channels_last", "onnxruntime-fp32"]
    assert DeploymentRule(throughput_tolerance=0.0).apply(table)["form"] == "channels_last"


def test_deployment_rule_ignores_unavailable_forms():
    table = rule_table([(BASELINE, 1.0, 1000, 0.0)])
    failed = pd.DataFrame([{"form": "torch.compile", "batch": b} for b in (1, 512)])

    choice = DeploymentRule().apply(pd.concat([table, failed], ignore_index=True))

    assert choice["form"] == BASELINE and choice["unavailable"] == ["torch.compile"]


def test_form_is_a_plain_callable():
    form = Form("identity", "returns a fixed logit row", lambda x: torch.ones(len(x), 47))

    assert form(np.zeros((3, 1, 28, 28), dtype=np.float32)).shape == (3, 47)


@pytest.mark.parametrize("name", ["onnxruntime-int8", "channels_last"])
def test_a_form_on_one_thread_computes_the_same(forms, val_batch, name):
    one = with_threads(forms[name], 1)
    assert one.threads == 1 and one.name == name
    assert torch.equal(one(val_batch).argmax(1), forms[name](val_batch).argmax(1))


def test_thread_sweep_times_every_thread_count_and_batch(forms):
    table = thread_sweep(forms["onnxruntime-int8"], (1, 8), (1, 2), min_run_time=0.01)
    assert list(zip(table.threads, table.batch, strict=True)) == [(1, 1), (1, 8), (2, 1), (2, 8)]
    assert (table.images_per_s > 0).all()


def test_onnx_speeds_times_every_model_at_both_batch_sizes(forms):
    fp32, int8 = forms["onnxruntime-fp32"], forms["onnxruntime-int8"]
    speeds = onnx_speeds({"fp32": fp32, "int8": int8}, 16, rounds=2, min_run_time=0.01)
    assert set(speeds) == {"fp32", "int8"}
    for speed in speeds.values():
        assert set(speed) == {"onnx_latency_ms", "onnx_images_per_s"}
        assert 0 < speed["onnx_latency_ms"] < 1000 and speed["onnx_images_per_s"] > 1
    with pytest.raises(ValueError, match="one round"):
        onnx_speeds({"fp32": fp32}, 16, rounds=0)
