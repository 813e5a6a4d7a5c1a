"""Hyperparameter search with Optuna: the search space, trials under a fixed budget, workers.

A study lives in an Optuna RDB storage (by default a SQLite file in the results folder, or any
database URL Optuna accepts), so several worker processes can share it and an interrupted search
continues where it stopped. One study maximizes validation accuracy with pruning; a second,
multi-objective one trades accuracy against FLOPs per image or latency at batch 1.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import math
import multiprocessing
import os
import re
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import torch
from filelock import FileLock
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from optuna.trial import TrialState
from torch import nn

from annlib.data.studies import build_study, default_study, subsample
from annlib.experiments import RECIPE, study_precision
from annlib.models import NUM_CLASSES, REGISTRY, count_parameters, create_model, flops_per_image
from annlib.paths import results_dir
from annlib.plots import save
from annlib.pretrained import weights_file
from annlib.profiles import get_profile
from annlib.selection import PRETRAINED, load_selection
from annlib.timing import measure_inference
from annlib.train import fit, seed_everything

log = logging.getLogger(__name__)

SCHEDULE = "one-cycle"  # the only schedule annlib.train.fit has
TRAINING_PARAMS = ("lr", "weight_decay", "batch_size", "label_smoothing", "augment")
COSTS = {"flops": "flops", "latency": "latency_ms"}  # second objective -> user attribute
COST_AXES = {  # user attribute -> (scale, axis label) in plots
    "flops": (1e-6, "MFLOPs per image (log scale)"),
    "latency_ms": (1.0, "latency at batch 1 (ms, log scale)"),
}
MIN_TRIALS_FOR_IMPORTANCE = 5
# Each trial trains on a subset: small enough that a few dozen trials fit a CPU, and validates on
# up to 10,000 images, so that trials a few tenths of a point apart can be told apart.
TRAIN_IMAGES = 12_000
VAL_IMAGES = 10_000
SQLITE_TIMEOUT_S = 60


@dataclass(frozen=True)
class SearchSpace:
    """Ranges the sampler draws from; None leaves a parameter at the model's own default.

    lr and weight_decay are drawn on a log scale, width and size (the input side a pretrained
    network sees) as (low, high, step), blocks as (low, high); batch sizes are a list of choices.
    """

    lr: tuple[float, float] = (3e-4, 3e-2)
    weight_decay: tuple[float, float] = (1e-4, 0.3)
    batch_size: tuple[int, ...] = (64, 128, 256, 512)
    label_smoothing: tuple[float, float] = (0.0, 0.2)
    augment: tuple[float, float] = (0.0, 1.0)
    dropout: tuple[float, float] | None = None
    width: tuple[int, int, int] | None = None
    blocks: tuple[int, int] | None = None
    size: tuple[int, int, int] | None = None


# What each self-designed family lets the search change besides the training recipe.
FAMILY_SPACES: dict[str, dict[str, Any]] = {
    "vgg": {"width": (8, 48, 8), "dropout": (0.0, 0.5)},
    "resnet-small": {"width": (8, 32, 8), "blocks": (1, 3)},
    "sepnet": {"width": (8, 64, 8), "dropout": (0.0, 0.5)},
    # Pretrained weights fix the width; the input side sets the cost (FLOPs grow with its square).
    "mobilenetv2": {"size": (32, 64, 16)},
}


def model_family(model: str) -> str | None:
    """Return the tunable family of a registry model (vgg, resnet-small, ...), else None."""
    if model not in REGISTRY:
        raise ValueError(f"Unknown model {model!r}: choose one of {', '.join(sorted(REGISTRY))}.")
    return next((f for f in FAMILY_SPACES if model.startswith(f"{f}-")), None)


def search_space(model: str) -> SearchSpace:
    """Return the search space of a registry model: the recipe, plus its family's architecture."""
    family = model_family(model)
    return replace(SearchSpace(), **FAMILY_SPACES.get(family, {}))


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Draw one configuration from the space; return it as a flat dict of parameters."""
    params: dict[str, Any] = {
        "lr": trial.suggest_float("lr", *space.lr, log=True),
        "weight_decay": trial.suggest_float("weight_decay", *space.weight_decay, log=True),
        "batch_size": trial.suggest_categorical("batch_size", list(space.batch_size)),
        "label_smoothing": trial.suggest_float("label_smoothing", *space.label_smoothing),
        "augment": trial.suggest_float("augment", *space.augment),
    }
    if space.width is not None:
        low, high, step = space.width
        params["width"] = trial.suggest_int("width", low, high, step=step)
    if space.blocks is not None:
        params["blocks"] = trial.suggest_int("blocks", *space.blocks)
    if space.dropout is not None:
        params["dropout"] = trial.suggest_float("dropout", *space.dropout)
    if space.size is not None:
        low, high, step = space.size
        params["size"] = trial.suggest_int("size", low, high, step=step)
    return params


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a configuration as (TrainConfig fields, model constructor options)."""
    training = {k: v for k, v in params.items() if k in TRAINING_PARAMS}
    return training, {k: v for k, v in params.items() if k not in TRAINING_PARAMS}


def recipe_params(model: str, space: SearchSpace) -> dict[str, Any]:
    """Return the shared recipe and the registry model's own settings as trial parameters.

    Enqueued as a study's first trial, it puts the untuned configuration into the search, so the
    study's best is never worse than what model selection trained.
    """
    defaults = {k: p.default for k, p in inspect.signature(REGISTRY[model]).parameters.items()}
    params = {k: getattr(RECIPE, k) for k in TRAINING_PARAMS}
    params |= {k: defaults[k] for k in ("width", "blocks", "dropout", "size") if getattr(space, k)}
    return params


def build_model(
    model: str, arch: dict[str, Any], num_classes: int, options: dict[str, Any] | None = None
) -> nn.Module:
    """Return a registry model built with the sampled width, blocks and dropout.

    The registry's entries are the family classes with a width bound, so create_model("vgg-32",
    width=16) builds VGGSmall(width=16).
    """
    return create_model(model, num_classes=num_classes, **arch, **(options or {}))


def record_costs(trial: optuna.Trial, net: nn.Module, cost: str | None) -> dict[str, float]:
    """Store the model's parameter count and FLOPs (and latency, if it is the cost) on the trial.

    Latency is measured at batch 1 before training, while other workers may be training on the
    same cores: with several workers it is noisy, and FLOPs are the steadier cost.
    """
    costs: dict[str, float] = {"parameters": count_parameters(net), "flops": flops_per_image(net)}
    if cost == "latency":
        costs["latency_ms"] = measure_inference(net, 1, min_run_time=0.2)["ms_per_batch"]
    for key, value in costs.items():
        trial.set_user_attr(key, value)
    return costs


def epoch_reporter(
    trial: optuna.Trial, epochs: int | None = None
) -> Callable[[dict[str, Any]], None]:
    """Return an on_epoch_end callback for fit: record progress, report, prune if told to.

    The value reported is the best validation accuracy so far, the quantity the trial returns,
    with the epoch as the step. The last of `epochs` is never pruned: stopping then saves no
    time and would throw away a finished trial's result. Optuna has no pruning for
    multi-objective studies, so there the callback only records.
    """
    single = len(trial.study.directions) == 1

    def on_epoch_end(history: dict[str, Any]) -> None:
        for key in ("train_seconds", "epochs_run", "best_val_accuracy"):
            trial.set_user_attr(key, history[key])
        if not single:
            return
        epoch, accuracy = history["epochs_run"], history["best_val_accuracy"]
        trial.report(accuracy, step=epoch)
        if epoch != epochs and trial.should_prune():
            raise optuna.TrialPruned(f"best validation accuracy {accuracy:.4f} at epoch {epoch}")

    return on_epoch_end


class Objective:
    """Train one sampled configuration under a fixed budget; return accuracy (and the cost)."""

    def __init__(
        self,
        model: str,
        train: tuple[np.ndarray, np.ndarray],
        val: tuple[np.ndarray, np.ndarray],
        epochs: int,
        space: SearchSpace | None = None,
        cost: str | None = None,
        seed: int = 0,
        precision: str = "auto",
        model_options: dict[str, Any] | None = None,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        self.model, self.train, self.val, self.epochs = model, train, val, epochs
        self.space = space or search_space(model)
        self.cost, self.seed, self.precision = cost, seed, precision
        self.model_options, self.num_classes = model_options, num_classes
        if max(self.space.batch_size) > len(train[1]):
            raise ValueError(
                f"The largest batch size searched ({max(self.space.batch_size)}) exceeds the "
                f"{len(train[1])} training images: fit drops the last partial batch, so no step "
                "would run. Give the trials more images or a smaller batch_size range."
            )

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        """Run the trial: sample, build, train with per-epoch reports; return its objectives."""
        training, arch = split_params(suggest(trial, self.space))
        config = replace(
            RECIPE, epochs=self.epochs, seed=self.seed, precision=self.precision, **training
        )

        seed_everything(self.seed)
        net = build_model(self.model, arch, self.num_classes, self.model_options)
        costs = record_costs(trial, net, self.cost)

        history = fit(
            net, self.train, self.val, config, on_epoch_end=epoch_reporter(trial, self.epochs)
        )
        accuracy = history["best_val_accuracy"]
        return accuracy if self.cost is None else (accuracy, costs[COSTS[self.cost]])


def dry_run_objective(
    trial: optuna.Trial,
    space: SearchSpace,
    model: str,
    cost: str | None = None,
    pause: float = 0.05,
) -> float | tuple[float, float]:
    """Return a made-up score of the sampled parameters: no data, no training; checks wiring.

    The model is still built, so parameters and FLOPs are real; the score peaks at lr = 3e-3.
    """
    params = suggest(trial, space)
    _, arch = split_params(params)
    costs = record_costs(trial, build_model(model, arch, NUM_CLASSES), cost)
    time.sleep(pause)
    score = 1 / (1 + (math.log10(params["lr"]) + 2.5) ** 2 + params["label_smoothing"])
    for key, value in {"train_seconds": 0.0, "epochs_run": 0, "best_val_accuracy": score}.items():
        trial.set_user_attr(key, value)
    return score if cost is None else (score, costs[COSTS[cost]])


# --- storage and studies ---------------------------------------------------------------------


class StorageError(RuntimeError):
    """The tuning database cannot be opened or created."""


def default_storage(results: str | Path) -> str:
    """Return the SQLite URL of a study's tuning database: <results>/tuning.db."""
    return f"sqlite:///{Path(results).resolve() / 'tuning.db'}"


def safe_url(url: str) -> str:
    """Return a database URL with its password hidden, fit for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparseable: mask anything that looks like user:password@
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def sqlite_file(url: str) -> Path | None:
    """Return the database file of a SQLite URL (None for other databases and :memory:)."""
    if not url.startswith("sqlite"):
        return None
    database = url.split(":///", 1)[1] if ":///" in url else ""
    return Path(database) if database and database != ":memory:" else None


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Return Optuna's RDB storage for a database URL, creating its tables (and SQLite folder).

    Raises StorageError naming the URL (password hidden) and the reason when it cannot be
    opened: a malformed URL, a missing database driver, an unreachable server, a folder that
    cannot be written.
    """
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_file(url)
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StorageError(
            f"Cannot open the tuning database {safe_url(url)}: {reason}. Give a SQLite file in "
            "a writable folder (sqlite:////abs/path/tuning.db) or a database URL Optuna "
            "accepts, with its driver installed (e.g. postgresql+psycopg2://user@host/db)."
        ) from error


def trial_lock(url: str, name: str) -> AbstractContextManager:
    """Return a lock shared by every process on this machine that works on the same study.

    It lives in the temporary folder, named by a hash of the URL and study name, so it never
    litters the results folder.
    """
    if url == "sqlite:///:memory:":
        return nullcontext()
    key = hashlib.sha256(f"{url}\n{name}".encode()).hexdigest()[:16]
    return FileLock(Path(tempfile.gettempdir()) / f"annlib-tuning-{key}.lock")


@dataclass(frozen=True)
class TuneSpec:
    """One tuning study: the model, each trial's data and budget, and where trials are stored.

    cost None makes the accuracy study (maximize validation accuracy, pruned); "flops" or
    "latency" makes the multi-objective one (also minimize that cost, no pruning). The spec is
    picklable, so spawned worker processes receive it whole.
    """

    model: str
    study: str
    storage: str
    n_trials: int = 30
    epochs: int = 3
    train_images: int | None = TRAIN_IMAGES
    val_images: int | None = VAL_IMAGES
    cost: str | None = None
    seed: int = 0
    name: str | None = None
    data_dir: str | None = None
    weights: str | None = None
    precision: str = "auto"
    dry_run: bool = False
    space: SearchSpace | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.cost not in (None, *COSTS):
            raise ValueError(f"cost must be None, {' or '.join(COSTS)}, not {self.cost!r}.")
        model_family(self.model)  # validates the name

    def study_name(self) -> str:
        """Return the Optuna study name: given, else <study>-<model>-<objectives>."""
        objectives = "accuracy" if self.cost is None else f"accuracy-vs-{self.cost}"
        return self.name or f"{self.study}-{self.model}-{objectives}"

    def directions(self) -> list[str]:
        """Return the optimization directions of the study's objectives."""
        return ["maximize"] if self.cost is None else ["maximize", "minimize"]

    def search_space(self) -> SearchSpace:
        """Return the space given, else the model family's default."""
        return self.space or search_space(self.model)

    def settings(self) -> dict[str, Any]:
        """Return what every trial of the study must share (compared when it is reopened)."""
        keep = ("model", "study", "epochs", "train_images", "val_images", "cost", "seed")
        settings = {k: getattr(self, k) for k in keep}
        settings |= {"precision": self.precision, "dry_run": self.dry_run, "schedule": SCHEDULE}
        settings["space"] = asdict(self.search_space())
        return json.loads(json.dumps(settings))


def make_sampler(spec: TuneSpec, worker: int = 0) -> optuna.samplers.BaseSampler:
    """Return a TPE sampler seeded per worker (seed + worker index).

    multivariate models the parameters jointly (lr and batch size interact); constant_liar makes
    each worker treat the others' running trials as bad, so parallel workers spread out. TPE also
    serves the multi-objective study: NSGA-II's first generation (50 by default) alone would use
    up a CPU budget of a few dozen trials on random search.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=spec.seed + worker,
            n_startup_trials=min(10, max(2, spec.n_trials // 3)),
            multivariate=True,
            constant_liar=True,
        )


def make_pruner(spec: TuneSpec | None = None) -> optuna.pruners.BasePruner:
    """Return the median pruner for the accuracy study (no pruning for a multi-objective one).

    A trial stops when its best accuracy so far falls below the median of earlier trials at the
    same epoch. Nothing is pruned before 4 trials have finished, nor at the first epoch, whose
    accuracy under one-cycle warm-up says little. Median rather than Hyperband: with budgets of
    a few epochs and a few dozen trials, Hyperband's brackets are too few and too small.
    """
    if spec is not None and spec.cost is not None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2)


def check_settings(study: optuna.Study, spec: TuneSpec) -> None:
    """Save the spec's settings on a new study; raise if a reopened one was made with others."""
    settings = spec.settings()
    saved = study.user_attrs.get("settings")
    if saved is None:
        study.set_user_attr("settings", settings)
    elif saved != settings:
        differ = sorted(
            k for k in settings.keys() | saved.keys() if settings.get(k) != saved.get(k)
        )
        raise ValueError(
            f"Study {study.study_name!r} in {safe_url(spec.storage)} was made with other "
            f"settings ({', '.join(differ)} differ): its trials would not compare with new ones. "
            "Give this search its own study name, or the settings it was made with."
        )


def process_alive(pid: Any) -> bool:
    """Return True if a process with this id runs on this machine."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the running trials whose worker process on this machine no longer exists.

    A worker killed mid-trial (or a machine that was shut down) leaves its trial RUNNING for
    ever; failed trials do not count towards the study's budget, so a restarted search runs
    them again. Trials of workers on other machines, or still alive, are left alone.
    """
    host = socket.gethostname()
    orphans = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("host") == host and not process_alive(t.user_attrs.get("pid"))
    ]
    for number in orphans:
        study.tell(number, state=TrialState.FAIL)
        log.warning("trial %d of %s: its worker is gone, marked FAIL", number, study.study_name)
    return orphans


def fail_running_trials(spec: TuneSpec) -> list[int]:
    """Mark FAIL every running trial of a study; return their numbers.

    For trials whose worker died where fail_orphaned_trials cannot tell (another machine, or a
    worker that recorded no host): call it only while no worker of the study is running.
    """
    with trial_lock(spec.storage, spec.study_name()):
        study = load_study(spec)
        running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        for number in running:
            study.tell(number, state=TrialState.FAIL)
            log.warning("trial %d of %s marked FAIL on request", number, study.study_name)
    return running


def prepare_study(spec: TuneSpec) -> optuna.Study:
    """Create the study (or reopen it, checking its settings); a new one first gets the recipe.

    Trials left running by workers of this machine that have died are marked FAIL first.
    """
    with trial_lock(spec.storage, spec.study_name()):
        storage = open_storage(spec.storage)
        study = optuna.create_study(
            storage=storage,
            study_name=spec.study_name(),
            directions=spec.directions(),
            sampler=make_sampler(spec),
            pruner=make_pruner(spec),
            load_if_exists=True,
        )
        check_settings(study, spec)
        fail_orphaned_trials(study)
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(recipe_params(spec.model, spec.search_space()))
    return study


def load_study(spec: TuneSpec, worker: int = 0) -> optuna.Study:
    """Reopen a prepared study with the worker's sampler."""
    try:
        return optuna.load_study(
            study_name=spec.study_name(),
            storage=open_storage(spec.storage),
            sampler=make_sampler(spec, worker),
            pruner=make_pruner(spec),
        )
    except KeyError as error:
        raise ValueError(
            f"No study {spec.study_name()!r} in {safe_url(spec.storage)}: run tune() first."
        ) from error


# --- workers ---------------------------------------------------------------------------------


def next_trial(
    study: optuna.Study, n_trials: int, lock: AbstractContextManager
) -> optuna.Trial | None:
    """Return a new trial of the study, or None once it holds n_trials that did not fail.

    Counting and creating happen under one lock shared by every worker on this machine, so two
    workers can never both take the last place: the study ends with exactly n_trials complete,
    pruned or running trials, however many workers share it and however often the search is
    restarted. (Optuna's MaxTrialsCallback counts after a trial and then creates the next one
    without a lock, so two workers finishing together can both go on.) Failed trials are not
    counted, so that a trial whose worker died is run again; a trial that raises stops its
    worker, so failures cannot loop.
    """
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    with lock:
        if len(study.get_trials(deepcopy=False, states=counted)) >= n_trials:
            return None
        return study.ask()


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Callable) -> TrialState:
    """Run the objective on an asked trial and tell the study how it ended; return the state.

    A pruned trial ends PRUNED; one that raises ends FAIL and the error is raised again.
    """
    try:
        values = objective(trial)
    except optuna.TrialPruned as pruned:
        study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d pruned: %s", trial.number, pruned)
        return TrialState.PRUNED
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        log.exception("trial %d failed", trial.number)
        raise
    frozen = study.tell(trial, values)
    log.info("trial %d %s: %s, %s", trial.number, frozen.state.name, values, trial.params)
    return frozen.state


def make_objective(spec: TuneSpec) -> Callable:
    """Return the spec's objective: training on the study's data, or the dry run's stand-in."""
    space = spec.search_space()
    if spec.dry_run:
        return partial(dry_run_objective, space=space, model=spec.model, cost=spec.cost)

    data = build_study(spec.study, spec.data_dir)
    train = subsample(data.X_train, data.y_train, spec.train_images, spec.seed)
    val = subsample(data.X_val, data.y_val, spec.val_images, 0)
    options = {"weights": weights_file(spec.weights)} if spec.model in PRETRAINED else None
    return Objective(
        spec.model,
        train,
        val,
        spec.epochs,
        space,
        spec.cost,
        spec.seed,
        spec.precision,
        options,
        len(data.classes),
    )


def run_worker(spec: TuneSpec, worker: int = 0, threads: int | None = None) -> int:
    """Run trials of a prepared study until it holds spec.n_trials; return how many ran here."""
    if threads is not None:
        torch.set_num_threads(threads)
    study = load_study(spec, worker)
    lock = trial_lock(spec.storage, spec.study_name())
    objective = None
    ran = 0
    while (trial := next_trial(study, spec.n_trials, lock)) is not None:
        objective = objective or make_objective(spec)
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        run_trial(study, trial, objective)
        ran += 1
    log.info("worker %d ran %d trials of %s", worker, ran, spec.study_name())
    return ran


def worker_process(spec: TuneSpec, worker: int, threads: int) -> None:
    """Entry point of a spawned worker process: set up logging, then run trials."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {worker}: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_worker(spec, worker, threads)


def start_workers(spec: TuneSpec, workers: int) -> None:
    """Run a prepared study's trials in `workers` spawned processes sharing the CPU cores.

    Raises RuntimeError if any worker fails; the trials already told stay in the study.
    """
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=worker_process, args=(spec, i, threads), name=f"tune-worker-{i}")
        for i in range(workers)
    ]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(
            f"{', '.join(failed)} of {spec.study_name()} stopped with an error (see its log). "
            "Finished trials are kept: run the search again to complete it."
        )


def tune(spec: TuneSpec, workers: int = 1) -> optuna.Study:
    """Prepare the study and run it to spec.n_trials trials in `workers` processes; return it.

    One worker runs in this process; more are spawned, each with its share of the CPU threads.
    """
    prepare_study(spec)
    if workers <= 1:
        run_worker(spec)
    else:
        start_workers(spec, workers)
    return load_study(spec)


# --- summaries -------------------------------------------------------------------------------


def cost_column(study: optuna.Study) -> str | None:
    """Return the user attribute a multi-objective study minimizes (None for the accuracy one)."""
    cost = study.user_attrs.get("settings", {}).get("cost")
    return COSTS[cost] if cost else None


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """Return one row per trial: number, state, val_accuracy, duration, params, user_attrs."""
    multi = len(study.directions) > 1
    table = study.trials_dataframe(
        attrs=(
            "number",
            "state",
            "values" if multi else "value",
            "duration",
            "params",
            "user_attrs",
        )
    )
    if table.empty:
        return table
    table = table.rename(columns={"value": "val_accuracy", "values_0": "val_accuracy"})
    table = table.drop(columns=["values_1"], errors="ignore")  # the cost is also a user_attr
    table.columns = [re.sub(r"^(params|user_attrs)_", "", c) for c in table.columns]
    if "duration" in table:
        table["duration"] = table["duration"].dt.total_seconds()
    return table


def best_table(study: optuna.Study, k: int = 5) -> pd.DataFrame:
    """Return the k most accurate complete trials (for a multi-objective study, its front)."""
    if len(study.directions) > 1:
        return front_table(study)
    table = trials_table(study)
    if table.empty:
        return table
    done = table[table.state == "COMPLETE"]
    return done.sort_values("val_accuracy", ascending=False).head(k).reset_index(drop=True)


def front_table(study: optuna.Study) -> pd.DataFrame:
    """Return a multi-objective study's Pareto front (study.best_trials), cheapest first."""
    front = {t.number for t in study.best_trials}
    table = trials_table(study)
    if table.empty:
        return table
    table = table[table.number.isin(front)]
    return table.sort_values([cost_column(study), "val_accuracy"]).reset_index(drop=True)


def best_settings(study: optuna.Study) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the best trial's (TrainConfig overrides, model options), for train_model."""
    return split_params(study.best_trial.params)


def param_importances(study: optuna.Study) -> pd.Series:
    """Return each parameter's share of the accuracy's variance (fANOVA, seeded), largest first.

    With fewer than MIN_TRIALS_FOR_IMPORTANCE complete trials the estimate means nothing: an
    empty Series is returned and a warning logged.
    """
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        log.warning(too_few_message(len(done)))
        return pd.Series(dtype=float, name="importance")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    shares = optuna.importance.get_param_importances(
        study, evaluator=evaluator, target=accuracy_target(study)
    )
    return pd.Series(shares, name="importance")


def too_few_message(done: int) -> str:
    """Return the note shown where importances need more complete trials."""
    return (
        f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; the "
        f"study has {done}. Run more trials (pruned and failed ones do not count)."
    )


def accuracy_target(study: optuna.Study) -> Callable | None:
    """Return the accuracy of a multi-objective study's trials (None: the single value)."""
    return (lambda t: t.values[0]) if len(study.directions) > 1 else None


@contextmanager
def optuna_style() -> Iterator[None]:
    """Draw an Optuna matplotlib plot without its side effects on later figures.

    Its plots switch matplotlib to the ggplot style for good and warn that they are
    experimental; the style is undone on exit and the warning silenced.
    """
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def history_plot(study: optuna.Study, path: str | Path | None = None) -> Figure:
    """Plot validation accuracy per trial and the best so far (Optuna's optimization history)."""
    with optuna_style():
        ax = optuna.visualization.matplotlib.plot_optimization_history(
            study, target=accuracy_target(study), target_name="validation accuracy"
        )
        return save(ax.figure, path)


def importance_plot(study: optuna.Study, path: str | Path | None = None) -> Figure:
    """Plot the parameters' importances, or a note saying how many more trials they need."""
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if done < MIN_TRIALS_FOR_IMPORTANCE:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, too_few_message(done), ha="center", va="center", wrap=True)
        return save(fig, path)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    with optuna_style():
        ax = optuna.visualization.matplotlib.plot_param_importances(
            study,
            evaluator=evaluator,
            target=accuracy_target(study),
            target_name="validation accuracy",
        )
        return save(ax.figure, path)


def front_plot(
    pareto: optuna.Study, single: optuna.Study | None = None, path: str | Path | None = None
) -> Figure:
    """Plot accuracy against cost for every trial of the multi-objective study, its front as a
    line, and the accuracy study's best trial beside it (when it recorded the same cost)."""
    cost = cost_column(pareto)
    if cost is None:
        raise ValueError(f"{pareto.study_name} is not a multi-objective study: it has no front.")
    table = trials_table(pareto)
    done = table[table.state == "COMPLETE"]
    front = front_table(pareto)

    scale, xlabel = COST_AXES[cost]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(done[cost] * scale, done.val_accuracy, s=20, color="0.65", label="trials")
    ax.step(front[cost] * scale, front.val_accuracy, where="post", color="C0", lw=1.2)
    ax.scatter(
        front[cost] * scale, front.val_accuracy, s=40, color="C0", zorder=3, label="Pareto front"
    )
    if single is not None:
        best = single.best_trial
        if cost in best.user_attrs:
            ax.scatter(
                best.user_attrs[cost] * scale,
                best.value,
                marker="*",
                s=220,
                color="crimson",
                zorder=4,
                label=f"best of accuracy study (trial {best.number})",
            )
        else:
            log.warning("the accuracy study did not record %s; its best is left out", cost)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=xlabel, ylabel="best validation accuracy", title="Accuracy against cost")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save(fig, path)


def summary_line(study: optuna.Study) -> str:
    """Return one line saying how a study ended: trial states and its best (or its front)."""
    states = pd.Series([t.state.name for t in study.get_trials(deepcopy=False)]).value_counts()
    counts = ", ".join(f"{n} {s.lower()}" for s, n in states.items())
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return f"{study.study_name}: {counts}; no complete trial yet"
    if len(study.directions) > 1:
        return f"{study.study_name}: {counts}; {len(study.best_trials)} trials on the front"
    best = study.best_trial
    return (
        f"{study.study_name}: {counts}; best validation accuracy {best.value:.4f} "
        f"(trial {best.number}: {best.params})"
    )


# --- command line ----------------------------------------------------------------------------

# The cpu budgets are what one 2-core session could afford for MobileNetV2 (see notebook 04).
TRIALS = {"smoke": 3, "cpu": 16, "full": 60}
PARETO_TRIALS = {"smoke": 2, "cpu": 6, "full": 40}  # the multi-objective study's


def budget(profile: str, cost: str | None = None) -> dict[str, int | None]:
    """Return a profile's tuning budget: trials, epochs per trial, training and val images.

    cost None gives the accuracy study's number of trials, a cost the multi-objective one's.

    Epochs are the profile's "tuning" budget, else its selection one; images are capped at
    TRAIN_IMAGES and VAL_IMAGES (or the profile's own, if smaller).
    """
    prof = get_profile(profile)

    def cap(n: int | None, limit: int) -> int:
        return limit if n is None else min(n, limit)

    return {
        "n_trials": (TRIALS if cost is None else PARETO_TRIALS).get(prof.name, 30),
        "epochs": prof.epochs.get("tuning", prof.epochs_for("selection")),
        "train_images": cap(prof.train_images, TRAIN_IMAGES),
        "val_images": cap(prof.val_images, VAL_IMAGES),
    }


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the tune command's own options (profile, study, data and output come from the CLI)."""
    parser.add_argument("--model", help="registry model (default: selection.json's choice)")
    parser.add_argument("--trials", type=int, help="total trials of the study (default: profile)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (default: profile)")
    parser.add_argument("--train-images", type=int, help="training images per trial")
    parser.add_argument("--val-images", type=int, help="validation images per trial")
    parser.add_argument("--storage", help="database URL (default: results/<study>/tuning.db)")
    parser.add_argument("--study-name", help="Optuna study name (default: study-model-objective)")
    parser.add_argument(
        "--cost", choices=sorted(COSTS), help="run the multi-objective study against this cost"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="pretrained weights, for mobilenetv2 head/finetune")
    parser.add_argument(
        "--dry-run", action="store_true", help="made-up objective, temporary database: wiring"
    )
    parser.add_argument(
        "--fail-running",
        action="store_true",
        help="first mark FAIL the trials left running by dead workers (no worker may be running)",
    )


def spec_from_args(args: argparse.Namespace) -> TuneSpec:
    """Return the TuneSpec the tune command's arguments describe."""
    study = args.study or ("dry-run" if args.dry_run else default_study(args.data_dir))
    results = results_dir(args.profile, args.output_dir) / study
    model = args.model
    if model is None:
        model = "vgg-32" if args.dry_run else load_selection(results)["chosen"]
    storage = args.storage
    if storage is None:
        folder = tempfile.mkdtemp(prefix="annlib-dry-run-") if args.dry_run else results
        storage = default_storage(folder)
    plan = budget(args.profile, args.cost)
    given = {
        "n_trials": args.trials,
        "epochs": args.epochs,
        "train_images": args.train_images,
        "val_images": args.val_images,
    }
    plan |= {k: v for k, v in given.items() if v is not None}
    precision = "auto" if args.dry_run else study_precision(results)
    return TuneSpec(
        model,
        study,
        storage,
        **plan,
        cost=args.cost,
        seed=args.seed,
        name=args.study_name,
        data_dir=args.data_dir,
        weights=args.weights,
        precision=precision,
        dry_run=args.dry_run,
    )


def tune_from_args(args: argparse.Namespace) -> optuna.Study:
    """Run the tune command: build the spec from its arguments, run the study, return it."""
    spec = spec_from_args(args)
    if args.fail_running:
        prepare_study(spec)
        fail_running_trials(spec)
    log.info(
        "tuning %s in %s with %d worker(s)", spec.study_name(), safe_url(spec.storage), args.workers
    )
    return tune(spec, args.workers)
