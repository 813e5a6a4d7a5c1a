"""Hyperparameter search: exact trial counts, a real trial, pruning, storage errors, the front."""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState

from annlib import tuning
from annlib.cli import add_common
from annlib.models import VGGSmall, count_parameters, flops_per_image
from annlib.selection import pareto_front


def dry_spec(tmp_path, n_trials: int, **kwargs) -> tuning.TuneSpec:
    """Return a dry-run spec (no data, no training) on a SQLite file in tmp_path."""
    storage = tuning.default_storage(tmp_path)
    return tuning.TuneSpec("vgg-32", "dry", storage, n_trials=n_trials, dry_run=True, **kwargs)


def fake_history(epoch: int, accuracy: float) -> dict:
    """Return the fields of fit's history that the epoch reporter reads."""
    return {"epochs_run": epoch, "best_val_accuracy": accuracy, "train_seconds": 1.0 * epoch}


def test_search_space_follows_the_model_family():
    vgg, resnet, mobile = (tuning.search_space(m) for m in ("vgg-32", "resnet-small-8", "sepnet-8"))
    assert vgg.width and vgg.dropout and vgg.blocks is None
    assert resnet.blocks and resnet.dropout is None
    assert mobile.width == tuning.FAMILY_SPACES["sepnet"]["width"]
    pretrained = tuning.search_space("mobilenetv2-finetune")
    assert (pretrained.width, pretrained.blocks, pretrained.dropout) == (None, None, None)
    assert pretrained.size == (32, 64, 16)
    assert tuning.recipe_params("mobilenetv2-finetune", pretrained)["size"] == 48
    assert tuning.recipe_params("vgg-32", vgg)["width"] == 32
    with pytest.raises(ValueError, match="Unknown model"):
        tuning.search_space("vgg-7")


def test_two_worker_processes_end_with_exactly_the_requested_trials(tmp_path):
    spec = dry_spec(tmp_path, n_trials=16)

    study = tuning.tune(spec, workers=2)

    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 16
    assert sorted(t.number for t in trials) == list(range(16))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["worker"] for t in trials} <= {0, 1}
    assert trials[0].params == tuning.recipe_params("vgg-32", spec.search_space())

    assert tuning.run_worker(spec, worker=2) == 0  # a late worker finds nothing left to do
    assert len(tuning.load_study(spec).trials) == 16


def test_workers_racing_for_the_last_trials_never_overshoot(tmp_path):
    spec = dry_spec(tmp_path, n_trials=20)
    tuning.prepare_study(spec)
    ran = []

    def work(worker: int) -> None:
        study = tuning.load_study(spec, worker)
        lock = tuning.trial_lock(spec.storage, spec.study_name())
        while (trial := tuning.next_trial(study, spec.n_trials, lock)) is not None:
            time.sleep(0.001)
            study.tell(trial, trial.suggest_float("lr", 1e-4, 1e-2, log=True))
            ran.append(worker)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    trials = tuning.load_study(spec).trials
    assert len(ran) == len(trials) == 20
    assert sorted(t.number for t in trials) == list(range(20))
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_one_real_trial_trains_and_records_its_attributes(tiny):
    train, val = tiny
    space = replace(tuning.search_space("vgg-8"), width=(8, 16, 8), batch_size=(64, 128))
    objective = tuning.Objective("vgg-8", train, val, epochs=1, space=space)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))

    study.optimize(objective, n_trials=1)

    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    net = VGGSmall(width=trial.params["width"], dropout=trial.params["dropout"])
    attrs = trial.user_attrs
    assert attrs["parameters"] == count_parameters(net)
    assert attrs["flops"] == flops_per_image(net)
    assert attrs["epochs_run"] == 1
    assert attrs["train_seconds"] > 0
    assert attrs["best_val_accuracy"] == trial.value
    assert 0 <= trial.value <= 1
    assert trial.intermediate_values == {1: trial.value}


def study_with_finished_trials() -> optuna.Study:
    """Return a pruned study holding five finished trials at 0.8 after each of three epochs."""
    study = optuna.create_study(direction="maximize", pruner=tuning.make_pruner())
    for _ in range(5):
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(0.8, epoch)
        study.tell(trial, 0.8)
    return study


def test_a_trial_far_below_the_finished_ones_is_pruned():
    study = study_with_finished_trials()

    def objective(accuracy):
        def run(trial):
            report = tuning.epoch_reporter(trial)
            for epoch in (1, 2, 3):
                report(fake_history(epoch, accuracy))
            return accuracy

        return run

    assert tuning.run_trial(study, study.ask(), objective(0.9)) == TrialState.COMPLETE
    assert tuning.run_trial(study, study.ask(), objective(0.05)) == TrialState.PRUNED

    pruned = study.trials[-1]
    assert pruned.state == TrialState.PRUNED
    assert pruned.last_step == 2  # the first epoch is never judged; the second is
    assert pruned.user_attrs["epochs_run"] == 2


def test_the_last_epoch_is_never_pruned():
    study = study_with_finished_trials()

    trial = study.ask()
    report = tuning.epoch_reporter(trial, epochs=2)
    report(fake_history(1, 0.05))
    report(fake_history(2, 0.05))  # would be pruned at any epoch but the last
    assert trial.user_attrs["epochs_run"] == 2


def test_bad_storage_gives_a_clear_error(tmp_path):
    with pytest.raises(tuning.StorageError, match="Cannot open the tuning database"):
        tuning.open_storage("nosuchdb://somewhere/tuning")

    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("a file, not a folder")
    with pytest.raises(tuning.StorageError, match="writable folder"):
        tuning.open_storage(f"sqlite:///{not_a_folder / 'tuning.db'}")

    with pytest.raises(tuning.StorageError) as error:
        tuning.open_storage("postgresql+nosuchdriver://user:secret@localhost/db")
    assert "secret" not in str(error.value)

    spec = replace(dry_spec(tmp_path, 2), storage="nosuchdb://somewhere/tuning")
    with pytest.raises(tuning.StorageError):
        tuning.tune(spec)


def test_reopening_a_study_with_another_budget_is_refused(tmp_path):
    spec = dry_spec(tmp_path, n_trials=2)
    tuning.tune(spec)

    assert len(tuning.tune(replace(spec, n_trials=3)).trials) == 3  # more trials: fine
    with pytest.raises(ValueError, match="epochs differ"):
        tuning.prepare_study(replace(spec, epochs=5))


def test_the_pareto_front_holds_only_non_dominated_trials(tmp_path):
    spec = dry_spec(tmp_path, n_trials=12, cost="flops")

    study = tuning.tune(spec)

    table = tuning.trials_table(study)
    done = table[table.state == "COMPLETE"].reset_index(drop=True)
    front = tuning.front_table(study)
    assert len(front) >= 1
    for _, row in front.iterrows():
        better = (done.flops <= row.flops) & (done.val_accuracy >= row.val_accuracy)
        strictly = (done.flops < row.flops) | (done.val_accuracy > row.val_accuracy)
        assert not (better & strictly).any()
    undominated = set(done.number[pareto_front(done, "flops", "val_accuracy")])
    assert set(front.number) == undominated

    assert tuning.front_plot(study, path=tmp_path / "front.png")
    assert (tmp_path / "front.png").is_file()


def test_importances_wait_for_enough_complete_trials(tmp_path):
    study = tuning.tune(dry_spec(tmp_path, n_trials=3))

    assert tuning.param_importances(study).empty
    assert tuning.importance_plot(study, tmp_path / "importance.png")
    assert len(tuning.best_table(study, k=2)) == 2
    training, arch = tuning.best_settings(study)
    assert set(training) == set(tuning.TRAINING_PARAMS) and set(arch) == {"width", "dropout"}


def test_too_large_a_batch_for_the_images_is_refused(tiny):
    (train, val), space = tiny, tuning.SearchSpace(batch_size=(1024,))
    with pytest.raises(ValueError, match="exceeds"):
        tuning.Objective("vgg-8", train, val, epochs=1, space=space)


def test_the_tune_command_runs_a_dry_run(tmp_path):
    parser = argparse.ArgumentParser()
    add_common(parser)
    tuning.add_tune_arguments(parser)
    storage = tuning.default_storage(tmp_path)
    argv = ["--profile", "smoke", "--output-dir", str(tmp_path), "--dry-run", "--storage", storage]

    study = tuning.tune_from_args(parser.parse_args(argv))

    n_trials = tuning.budget("smoke")["n_trials"]
    assert len(study.trials) == n_trials
    assert tuning.summary_line(study).startswith(f"dry-run-vgg-32-accuracy: {n_trials} complete")


def test_the_multi_objective_study_has_its_own_trial_budget():
    accuracy, pareto = tuning.budget("cpu"), tuning.budget("cpu", "flops")
    assert accuracy["n_trials"] == tuning.TRIALS["cpu"]
    assert pareto["n_trials"] == tuning.PARETO_TRIALS["cpu"]
    assert accuracy["epochs"] == pareto["epochs"] == 3
    assert accuracy["train_images"] == tuning.TRAIN_IMAGES
    assert tuning.budget("smoke")["train_images"] == 3000  # the profile's own is smaller


def test_python_m_annlib_tune_runs_the_study(tmp_path, capsys):
    from annlib.cli import main

    storage = tuning.default_storage(tmp_path)
    argv = ["tune", "--profile", "smoke", "--output-dir", str(tmp_path), "--dry-run"]
    assert main([*argv, "--storage", storage, "--cost", "flops"]) == 0

    out = capsys.readouterr().out
    pareto_trials = tuning.PARETO_TRIALS["smoke"]
    assert f"dry-run-vgg-32-accuracy-vs-flops: {pareto_trials} complete" in out
    assert "trials on the front" in out


def test_a_trial_left_running_by_a_dead_worker_is_run_again(tmp_path):
    import socket
    import subprocess
    import sys

    spec = dry_spec(tmp_path, n_trials=3)
    study = tuning.prepare_study(spec)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = study.ask()  # the enqueued recipe trial, as a worker killed mid-trial leaves it
    orphan.set_user_attr("host", socket.gethostname())
    orphan.set_user_attr("pid", int(gone.stdout))
    elsewhere = study.ask()  # a live worker on another machine: must be left alone
    elsewhere.set_user_attr("host", "another-machine")
    elsewhere.set_user_attr("pid", 1)

    study = tuning.tune(spec)

    states = {t.number: t.state for t in study.trials}
    assert states[orphan.number] == TrialState.FAIL
    assert states[elsewhere.number] == TrialState.RUNNING
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 2  # 3 counted: 2 + running


def test_fail_running_ends_trials_no_worker_will_finish(tmp_path, capsys):
    spec = dry_spec(tmp_path, n_trials=3)
    study = tuning.prepare_study(spec)
    unowned = study.ask()  # left by a worker that recorded no host: not detectable as orphaned
    study.tell(study.ask(), 0.5)

    assert tuning.fail_running_trials(spec) == [unowned.number]

    study = tuning.tune(spec)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1
    assert states.count(TrialState.COMPLETE) == 3
