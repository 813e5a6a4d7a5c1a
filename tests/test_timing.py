"""Inference timing rows."""

from __future__ import annotations

import pytest
import torch

from annlib.models import create_model
from annlib.timing import hardware, latency_and_throughput, measure_inference

KEYS = {"model", "batch", "threads", "dtype", "ms_per_batch", "images_per_s", "hardware"}


@pytest.fixture(scope="module")
def lenet5():
    torch.manual_seed(0)
    return create_model("lenet5")


def test_measure_inference_row(lenet5):
    row = measure_inference(lenet5, 8, "lenet5", min_run_time=0.05)

    assert KEYS <= row.keys()
    assert row["model"] == "lenet5"
    assert row["batch"] == 8
    assert row["threads"] == torch.get_num_threads()
    assert row["dtype"] == "float32"
    assert row["memory_format"] == "contiguous"
    assert 0 < row["ms_per_batch"] < 1_000
    assert row["images_per_s"] == pytest.approx(8 / (row["ms_per_batch"] / 1e3))
    assert row["iqr_ms"] >= 0 and row["runs"] >= 1
    assert row["hardware"] == hardware() and row["hardware"]
    assert row["torch"] == torch.__version__


def test_measure_inference_options_are_recorded(lenet5):
    threads = torch.get_num_threads()

    row = measure_inference(lenet5, 4, "lenet5", threads=1, channels_last=True, min_run_time=0.05)

    assert row["threads"] == 1
    assert row["memory_format"] == "channels_last"
    assert torch.get_num_threads() == threads


def test_latency_and_throughput_batches(lenet5):
    rows = latency_and_throughput(lenet5, "lenet5", large_batch=32, min_run_time=0.05)

    assert [r["batch"] for r in rows] == [1, 32]
    assert all(KEYS <= r.keys() and r["model"] == "lenet5" for r in rows)
    assert lenet5.training  # timed on a copy: the caller's model keeps its mode
