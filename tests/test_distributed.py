"""Data-parallel training: two gloo processes on the CPU against one, a dead worker, torchrun."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

import annlib.train
from annlib import distributed
from annlib.data.loader import Augment, Batches, to_tensors
from annlib.experiments import history_path
from annlib.models import create_model
from annlib.records import load_json
from annlib.train import BEST, CHECKPOINT, TrainConfig, fit

# LeNet-5 has neither batch norm nor dropout, so two processes can match one; augmentation is on,
# since both draw the same warps. patience=None keeps both epochs.
CONFIG = TrainConfig(
    epochs=2, batch_size=64, patience=None, precision="fp32", eval_batch_size=128, augment=0.5
)
# Two processes sum the two halves of each batch's gradient where one process sums it whole: the
# float rounding differs, and 16 AdamW steps carry it into the weights. Observed: about 1e-7.
ATOL = 1e-5
GROUP_SECONDS = 60  # a group of workers that has not finished by then fails the test
GLOO_SECONDS = 20  # how long a collective waits for a missing peer before it raises


def fresh_model() -> torch.nn.Module:
    """LeNet-5 initialised from seed 0."""
    torch.manual_seed(0)
    return create_model("lenet5")


def free_port() -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, port, train, val, folder, label, die_after) -> None:
    """One rank: join the group as torchrun would set it up, run fit, save what the test checks.

    Every library write (checkpoint, best weights, history) is recorded with the rank that made it.
    With die_after, rank 1 exits abruptly at the end of that epoch, as a crashed worker would.
    """
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    os.environ |= {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
    torch.set_num_threads(1)
    writes = []

    def spy(write, path_arg):
        def recorded(*args):
            writes.append(Path(args[path_arg]).name)
            return write(*args)

        return recorded

    annlib.train.save_atomic = spy(annlib.train.save_atomic, 1)
    annlib.train.save_json = spy(annlib.train.save_json, 0)

    epochs_seen = []

    def on_epoch_end(history):
        epochs_seen.append(history["epochs"][-1]["epoch"])
        if rank == 1 and len(history["epochs"]) == die_after:
            os._exit(3)

    assert distributed.init_from_env(backend="gloo", timeout=GLOO_SECONDS)
    try:
        model = fresh_model()
        history = fit(
            model, train, val, CONFIG, folder / "run", folder / "history.json", on_epoch_end
        )
    finally:
        distributed.shutdown()
    out = {"state": model.state_dict(), "history": history, "writes": writes}
    torch.save(out | {"epochs_seen": epochs_seen}, folder / f"{label}-rank{rank}.pt")


def run_group(world, train, val, folder, label, die_after=None) -> list[int | None]:
    """Start world worker processes and return their exit codes; fail if they outlive the limit."""
    args = (world, free_port(), train, val, folder, label, die_after)
    context = mp.start_processes(worker, args, nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + GROUP_SECONDS
    try:
        while not context.join(timeout=1):
            assert time.monotonic() < deadline, f"workers still running after {GROUP_SECONDS} s"
    except ProcessException:
        pass  # join has stopped the other workers; the exit codes tell the test what happened
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()
    return [process.exitcode for process in context.processes]


def results(folder: Path, label: str, world: int = 2) -> list[dict]:
    """Return what each worker of a group saved."""
    return [torch.load(folder / f"{label}-rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """One process; two processes; two processes whose rank 1 dies after epoch 1, then resumed."""
    tmp = tmp_path_factory.mktemp("ddp")
    train, val = tiny
    timings = {}

    start = time.perf_counter()
    single = fresh_model()
    single_history = fit(single, train, val, CONFIG, tmp / "single", tmp / "single.json")
    timings["one process"] = time.perf_counter() - start

    start = time.perf_counter()
    (tmp / "two").mkdir()
    codes = run_group(2, train, val, tmp / "two", "two")
    timings["two processes"] = time.perf_counter() - start
    assert codes == [0, 0]

    (tmp / "crash").mkdir()
    crashed_codes = run_group(2, train, val, tmp / "crash", "crashed", die_after=1)
    after_crash = {
        "checkpoint": torch.load(tmp / "crash" / "run" / CHECKPOINT, weights_only=False),
        "history": load_json(tmp / "crash" / "history.json"),
        "files": sorted(p.name for p in (tmp / "crash").rglob("*")),
    }
    start = time.perf_counter()
    resumed_codes = run_group(2, train, val, tmp / "crash", "resumed")
    timings["two processes, resumed"] = time.perf_counter() - start

    logging.getLogger(__name__).info("timings: %s", timings)
    return {
        "tmp": tmp,
        "single": (single, single_history),
        "two": results(tmp / "two", "two"),
        "crashed_codes": crashed_codes,
        "after_crash": after_crash,
        "resumed_codes": resumed_codes,
        "resumed": results(tmp / "crash", "resumed"),
    }


def test_two_processes_match_one_on_the_same_global_batch(runs):
    single, single_history = runs["single"]
    two = runs["two"]

    for rank in (0, 1):
        state = two[rank]["state"]
        assert state.keys() == single.state_dict().keys()
        for key, value in single.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=ATOL, msg=key)
    for key, value in two[0]["state"].items():
        assert torch.equal(two[1]["state"][key], value), key

    history = two[0]["history"]
    assert history["world_size"] == 2 and single_history["world_size"] == 1
    for mine, theirs in zip(history["epochs"], single_history["epochs"], strict=True):
        assert mine["train_images"] == theirs["train_images"] == 512
        assert mine["lr"] == theirs["lr"]
        for field in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert mine[field] == pytest.approx(theirs[field], abs=1e-5), field
    for mine, theirs in zip(two[1]["history"]["epochs"], history["epochs"], strict=True):
        assert mine | {"eval_seconds": 0} == theirs | {"eval_seconds": 0}


def test_rank_zero_alone_writes_the_outputs(runs):
    folder = runs["tmp"] / "two"
    two = runs["two"]

    assert two[1]["writes"] == []
    assert two[0]["writes"] == [CHECKPOINT, "history.json"] * 2 + [BEST, "history.json"]
    assert sorted(p.name for p in (folder / "run").iterdir()) == [BEST, CHECKPOINT]
    saved = load_json(folder / "history.json")
    assert saved["complete"] is True and saved["world_size"] == 2
    assert saved["config"]["batch_size"] == 64  # the global batch: 32 per process
    assert saved["epochs"] == two[0]["history"]["epochs"]


def test_a_dead_worker_leaves_the_last_complete_checkpoint(runs):
    after = runs["after_crash"]

    assert runs["crashed_codes"][1] == 3  # rank 1's os._exit
    assert runs["crashed_codes"][0] != 0  # rank 0 stopped, not finished
    assert [r["epoch"] for r in after["checkpoint"]["history"]["epochs"]] == [1]
    assert after["history"]["complete"] is False
    assert [r["epoch"] for r in after["history"]["epochs"]] == [1]
    assert not [name for name in after["files"] if name.endswith(".part")]
    assert len(after["checkpoint"]["torch_rng_ranks"]) == 2


def test_a_restarted_group_resumes_and_equals_an_uninterrupted_one(runs):
    resumed, two = runs["resumed"], runs["two"]

    assert runs["resumed_codes"] == [0, 0]
    assert [r["epochs_seen"] for r in resumed] == [[2], [2]]
    for rank in (0, 1):
        for key, value in two[0]["state"].items():
            assert torch.equal(resumed[rank]["state"][key], value), key
    for field in ("val_accuracy", "val_loss", "train_loss", "train_accuracy", "lr"):
        mine = [r[field] for r in resumed[0]["history"]["epochs"]]
        assert mine == [r[field] for r in two[0]["history"]["epochs"]], field


def test_shards_of_a_global_batch_make_up_the_single_process_batch(tiny):
    (X, y), _ = tiny
    images, labels = to_tensors(X, y)
    options = {"shuffle": True, "augment": Augment(0.5), "drop_last": True, "seed": 3}
    whole = list(Batches(images, labels, 64, **options))
    shards = [list(Batches(images, labels, 64, shard=(r, 2), **options)) for r in (0, 1)]

    assert len(whole) == len(shards[0]) == len(shards[1]) == 8
    for (x, t), (x0, t0), (x1, t1) in zip(whole, *shards, strict=True):
        assert x0.shape == x1.shape == (32, 1, 28, 28)
        assert torch.equal(torch.cat([t0, t1]), t)
        torch.testing.assert_close(torch.cat([x0, x1]), x, rtol=0, atol=1e-6)


def test_an_uneven_global_batch_is_refused(tiny, monkeypatch):
    (X, y), val = tiny
    images, labels = to_tensors(X, y)

    with pytest.raises(ValueError, match="multiple of 2"):
        Batches(images, labels, 63, drop_last=True, shard=(0, 2))
    with pytest.raises(ValueError, match="drop_last"):
        Batches(images, labels, 64, shard=(0, 2))
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="global batch of 64 does not split evenly over 3"):
        fit(fresh_model(), (X, y), val, CONFIG)


def test_launch_trains_with_torchrun_and_returns_the_saved_history(
    study, emnist_dir, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger=distributed.__name__)
    options = {"epochs": 1, "precision": "fp32", "batch_size": 128}
    history = distributed.launch(
        2,
        "lenet5",
        study,
        "smoke",
        emnist_dir,
        "ddp",
        output_dir=tmp_path,
        timeout=GROUP_SECONDS,
        **options,
    )
    (output,) = [r.getMessage() for r in caplog.records if "workers' output" in r.getMessage()]

    assert history == load_json(history_path("bymerge-small", "smoke", "lenet5-ddp", tmp_path))
    assert history["complete"] is True and history["world_size"] == 2
    assert history["train_size"] == 3000 and history["epochs"][0]["train_images"] == 2944
    assert history["config"]["batch_size"] == 128
    assert output.count("best validation accuracy") == 1  # the summary line, from rank 0 alone
    assert (tmp_path / "checkpoints" / "bymerge-small" / "lenet5-ddp" / BEST).is_file()


def test_validation_shards_cover_every_image_once(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    shards = []
    for rank in range(3):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        shards.append(distributed.shard(10))

    assert shards == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert distributed.local_batch(96) == 32


def test_launch_stops_workers_that_outlive_its_timeout(study, emnist_dir, tmp_path):
    start = time.monotonic()

    with pytest.raises(TimeoutError, match="still running after 2 s"):
        distributed.launch(2, "lenet5", study, "smoke", emnist_dir, output_dir=tmp_path, timeout=2)

    assert time.monotonic() - start < 40
