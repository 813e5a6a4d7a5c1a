"""Model selection: seed summaries, the Pareto front, front-runners and the selection rule."""

from __future__ import annotations

import pandas as pd
import pytest

from annlib.selection import (
    SelectionRule,
    family,
    front_runners,
    load_baselines,
    load_selection,
    pareto_front,
    seed_summary,
)


def run(model, seed, accuracy, seconds=60.0):
    return {
        "model": model,
        "config": {"seed": seed},
        "best_val_accuracy": accuracy,
        "train_seconds": seconds,
    }


def test_seed_summary_gives_mean_spread_and_count():
    table = seed_summary([run("a", 0, 0.80), run("a", 1, 0.84, 120), run("b", 0, 0.70)])

    a, b = table.set_index("model").loc["a"], table.set_index("model").loc["b"]
    assert a.val_accuracy == pytest.approx(0.82)
    assert a.val_spread == pytest.approx(0.04)
    assert (a.seeds, b.seeds) == (2, 1)
    assert a.train_min == pytest.approx(1.5)
    assert b.val_spread == 0


def test_pareto_front_keeps_only_undominated_points():
    table = pd.DataFrame(
        {
            "model": ["fast", "dominated", "accurate", "tie", "slow-bad"],
            "latency_ms": [1.0, 2.0, 5.0, 5.0, 9.0],
            "val_accuracy": [0.80, 0.79, 0.90, 0.89, 0.85],
        }
    )
    front = pareto_front(table, "latency_ms", "val_accuracy")

    assert table.model[front].tolist() == ["fast", "accurate"]


def test_front_runners_are_within_one_point_of_the_best():
    table = pd.DataFrame({"model": ["a", "b", "c"], "val_accuracy": [0.900, 0.891, 0.889]})

    assert front_runners(table) == ["a", "b"]


def candidates(spread=0.0):
    return pd.DataFrame(
        {
            "model": ["big", "mid", "small"],
            "val_accuracy": [0.900, 0.896, 0.880],
            "val_spread": [spread, spread, 0.0],
            "latency_ms": [9.0, 2.0, 0.5],
        }
    )


def test_rule_picks_the_fastest_within_half_a_point_of_the_best():
    choice = SelectionRule().apply(candidates(), ["big", "mid"])

    assert choice["chosen"] == "mid"
    assert choice["best"] == "big"
    assert choice["fastest"] == "small"
    assert choice["eligible"] == ["big", "mid"]
    assert choice["tolerance"] == pytest.approx(0.005)


def test_rule_widens_its_tolerance_to_the_seed_spread():
    choice = SelectionRule().apply(candidates(spread=0.03), ["big", "mid"])

    assert choice["tolerance"] == pytest.approx(0.03)
    assert choice["chosen"] == "small"


def test_rule_falls_back_to_the_best_when_nothing_is_close():
    table = candidates()
    table.loc[1, "val_accuracy"] = 0.85

    assert SelectionRule().apply(table, ["big"])["chosen"] == "big"


def test_families_by_name():
    assert family("sepnet-32") == "depthwise-separable"
    assert family("resnet-small-8") == "small ResNet"
    assert family("resnet50") == "baseline"
    assert family("mobilenetv2-head").startswith("MobileNetV2")


def test_missing_saved_results_say_which_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="03_model_selection"):
        load_selection(tmp_path)
    with pytest.raises(FileNotFoundError, match="02_baselines"):
        load_baselines(tmp_path)
