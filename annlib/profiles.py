"""Run profiles: how much data and how many epochs each kind of run uses, defined in one place."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Profile:
    """Data sizes, epoch budgets per model and timing effort of one kind of run."""

    name: str
    about: str
    train_images: int | None
    val_images: int | None
    epochs: dict[str, int] = field(default_factory=dict)
    timing_seconds: float = 1.0
    large_batch: int = 512

    def epochs_for(self, model: str) -> int:
        """Return the epoch budget of a model under this profile."""
        return self.epochs.get(model, self.epochs["default"])


PROFILES = {
    "smoke": Profile(
        "smoke",
        "a few thousand images and one epoch: proves the wiring in minutes",
        train_images=3000,
        val_images=1000,
        epochs={"default": 1},
        timing_seconds=0.1,
        large_batch=256,
    ),
    "cpu": Profile(
        "cpu",
        "all training data, epoch counts that fit a 2-core CPU",
        train_images=None,
        val_images=None,
        epochs={
            "default": 10,
            "lenet5": 20,
            "resnet50": 3,
            "selection": 3,
            "tuning": 3,
            "final": 5,
        },
        timing_seconds=2.0,
    ),
    "full": Profile(
        "full",
        "all training data, longer budgets (annlib trains on the CPU only for now)",
        train_images=None,
        val_images=None,
        epochs={"default": 30, "selection": 10},
        timing_seconds=2.0,
    ),
}


def get_profile(name: str) -> Profile:
    """Return a profile by name, with a clear error for an unknown one."""
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}: choose one of {', '.join(PROFILES)}.")
    return PROFILES[name]
