"""The training loop: per-epoch history, early stopping, atomic checkpoints and exact resume.

The same loop trains data-parallel when torch.distributed is initialized (see annlib.distributed).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from annlib import distributed
from annlib.data.loader import Augment, Batches, to_tensors
from annlib.evaluate import autocast, evaluate_shared
from annlib.records import atomic_path, bf16_native, environment, save_json

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


@dataclass
class TrainConfig:
    """Recipe and budget of one training run.

    batch_size is the global batch, whatever the number of processes, and lr the learning rate
    for it: under data parallelism each of N processes takes batch_size / N images a step.
    precision "auto" means bfloat16 autocast where the CPU runs it natively (AVX-512 BF16 or AMX)
    and float32 elsewhere: on a CPU without it bfloat16 is emulated and several times slower.
    """

    epochs: int = 10
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    augment: float = 0.5
    patience: int | None = 4
    seed: int = 0
    precision: str = "auto"
    channels_last: bool = True
    eval_batch_size: int = 1024

    def use_bf16(self) -> bool:
        """Return True if this run trains under bfloat16 autocast."""
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {self.precision!r}.")
        return self.precision == "bf16" or (self.precision == "auto" and bf16_native())


def same_settings(history: dict[str, Any], config: TrainConfig) -> bool:
    """Return True if a saved run used this config, comparing the precision actually used."""
    saved = {k: v for k, v in history.get("config", {}).items() if k != "precision"}
    asked = {k: v for k, v in asdict(config).items() if k != "precision"}
    return saved == asked and history.get("bf16") == config.use_bf16()


def seed_everything(seed: int) -> None:
    """Seed torch and numpy."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over path."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def warm_up(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> None:
    """Run one forward and backward pass on a copy, so that first-call setup is not timed.

    The copy and a forked random state leave the real model and every generator untouched.
    """
    with torch.random.fork_rng():
        twin = copy.deepcopy(model).train()
        with autocast(bf16):
            loss = F.cross_entropy(twin(x), y)
        loss.backward()


def train_step(model, x, y, optimizer, scheduler, label_smoothing, bf16):
    """Run one optimisation step on a batch; return its logits and loss (detached)."""
    with autocast(bf16):
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return logits.detach(), loss.detach()


def train_epoch(model, batches, optimizer, scheduler, config, bf16, desc) -> dict[str, float]:
    """Train for one pass over the batches; return loss, accuracy and pure training seconds.

    Under several processes the loss and accuracy are over all of them, images are the global
    count and seconds those of the slowest process.
    """
    model.train()
    device = next(model.parameters()).device
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    seconds = 0.0
    bar = tqdm(batches, desc=desc, leave=False, mininterval=2.0, disable=not distributed.is_main())
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        start = time.perf_counter()
        logits, loss = train_step(model, x, y, optimizer, scheduler, config.label_smoothing, bf16)
        seconds += time.perf_counter() - start

        total_loss += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)

    loss_sum, right, images = distributed.all_reduce([total_loss.item(), correct.item(), seen])
    return {
        "train_loss": loss_sum / images,
        "train_accuracy": right / images,
        "train_seconds": distributed.all_reduce([seconds], "max")[0],
        "train_images": int(images),
    }


def fit(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    run_dir: str | Path | None = None,
    history_path: str | Path | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a model and return its history; resume from run_dir's checkpoint if there is one.

    Each epoch's row holds train/validation loss and accuracy, pure training seconds (the steps
    alone: no evaluation, checkpointing or first-call warm-up), evaluation seconds and the
    learning rate. After every epoch the checkpoint in run_dir and the history JSON are replaced
    atomically, so an interrupted run resumes to the same result as an uninterrupted one. The
    model ends with the weights of its best validation epoch.

    When torch.distributed is initialized, every process calls fit with the same arguments: the
    model is wrapped in DistributedDataParallel and moved to the process's device, each process
    trains on its share of every global batch and scores its share of the validation set, and
    rank 0 alone reads the checkpoint (sending it to the others) and writes checkpoints and the
    history. Batch norm normalizes over each process's share of the batch.
    """
    rank, world = distributed.rank(), distributed.world_size()
    distributed.local_batch(config.batch_size)
    seed_everything(config.seed + rank)  # dropout masks differ per rank; rank 0 draws as one would
    bf16 = config.use_bf16()
    if distributed.active():
        model = model.to(distributed.device())
        log.info(
            "data-parallel on %d processes: global batch %d (%d each), lr %g",
            world,
            config.batch_size,
            config.batch_size // world,
            config.lr,
        )
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)

    images, labels = to_tensors(*train)
    batches = Batches(
        images,
        labels,
        config.batch_size,
        shuffle=True,
        augment=Augment(config.augment),
        channels_last=config.channels_last,
        drop_last=True,
        seed=config.seed,
        shard=(rank, world),
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * len(batches)
    )
    history: dict[str, Any] = {
        "config": asdict(config),
        "bf16": bf16,
        "world_size": world,
        "train_size": len(labels),
        "val_size": len(val[1]),
        "environment": environment(),
        **(info or {}),
        "epochs": [],
        "complete": False,
    }
    best = {"accuracy": -1.0, "epoch": 0, "state": None}

    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        state = distributed.broadcast_object(read_checkpoint(run_dir))
        if state is not None:
            if not same_settings(state["history"], config):
                raise ValueError(
                    f"{run_dir / CHECKPOINT} belongs to a run with other settings: delete it to "
                    "start afresh, or resume with the settings it was made with."
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            batches.generator.set_state(state["generator"])
            restore_torch_rng(state)
            history["epochs"] = state["history"]["epochs"]
            best = state["best"]
            log.info("resumed from %s after epoch %d", run_dir / CHECKPOINT, len(history["epochs"]))

    first = Batches(images, labels, config.batch_size // world, channels_last=config.channels_last)
    x0, y0 = next(iter(first))
    device = next(model.parameters()).device
    warm_up(model, x0.to(device), y0.to(device), bf16)
    net = distributed.wrap(model)

    for epoch in range(len(history["epochs"]) + 1, config.epochs + 1):
        if stop_early(history["epochs"], best, config.patience):
            break
        lr = scheduler.get_last_lr()[0]
        row = {"epoch": epoch, "lr": lr}
        row |= train_epoch(net, batches, optimizer, scheduler, config, bf16, f"epoch {epoch}")
        distributed.sync_buffers(model)

        start = time.perf_counter()
        metrics = evaluate_shared(model, *val, config.eval_batch_size, bf16, config.channels_last)
        row |= {"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"]}
        row["eval_seconds"] = time.perf_counter() - start
        history["epochs"].append(row)
        log.info(
            "epoch %d: train loss %.4f acc %.4f, val loss %.4f acc %.4f, %.1fs",
            epoch,
            row["train_loss"],
            row["train_accuracy"],
            row["val_loss"],
            row["val_accuracy"],
            row["train_seconds"],
        )

        if row["val_accuracy"] > best["accuracy"]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best = {"accuracy": row["val_accuracy"], "epoch": epoch, "state": state}
        torch_rngs = distributed.gather_objects(torch.get_rng_state())
        if run_dir is not None and rank == 0:
            checkpoint = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": batches.generator.get_state(),
                "torch_rng": torch_rngs[0],
                "history": history,
                "best": best,
            }
            if world > 1:
                checkpoint["torch_rng_ranks"] = torch_rngs
            save_atomic(checkpoint, run_dir / CHECKPOINT)
        summarize(history, best)
        if history_path is not None and rank == 0:
            save_json(history_path, history)
        distributed.barrier()
        if on_epoch_end is not None:
            on_epoch_end(history)

    model.load_state_dict(best["state"])
    history["complete"] = True
    summarize(history, best)
    if run_dir is not None and rank == 0:
        save_atomic(best["state"], run_dir / BEST)
    if history_path is not None and rank == 0:
        save_json(history_path, history)
    distributed.barrier()
    return history


def read_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """Return the checkpoint in run_dir on rank 0 (None if there is none, and on other ranks)."""
    if not distributed.is_main():
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / CHECKPOINT).exists():
        return None
    return torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)


def restore_torch_rng(state: dict[str, Any]) -> None:
    """Set torch's generator (dropout's draws) to the state this rank saved in a checkpoint.

    A checkpoint made by another number of processes restores what it has: ranks beyond its
    count keep their freshly seeded state, so dropout's draws differ from an uninterrupted run.
    """
    states = state.get("torch_rng_ranks") or [state["torch_rng"]]
    rank, world = distributed.rank(), distributed.world_size()
    if len(states) != world and rank == 0:
        log.warning("checkpoint made by %d processes, resumed by %d", len(states), world)
    if rank < len(states):
        torch.set_rng_state(states[rank])


def stop_early(epochs: list[dict], best: dict, patience: int | None) -> bool:
    """Return True once validation accuracy has not improved for `patience` epochs."""
    return patience is not None and bool(epochs) and epochs[-1]["epoch"] - best["epoch"] >= patience


def summarize(history: dict[str, Any], best: dict[str, Any]) -> None:
    """Add the totals a results table needs to a history, in place."""
    epochs = history["epochs"]
    history["best_epoch"] = best["epoch"]
    history["best_val_accuracy"] = best["accuracy"]
    history["epochs_run"] = len(epochs)
    history["train_seconds"] = sum(r["train_seconds"] for r in epochs)
    history["eval_seconds"] = sum(r["eval_seconds"] for r in epochs)
    seconds = history["train_seconds"]
    history["train_images_per_s"] = (
        sum(r["train_images"] for r in epochs) / seconds if seconds else 0
    )
    history["stopped_early"] = len(epochs) < history["config"]["epochs"]
