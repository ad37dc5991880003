"""The recipe's schedule: halve the learning rate on a validation-loss plateau, stop on a ROC-AUC plateau.

Source material: "if no improvement in E on validation data for 3 consecutive epochs, halve
the learning rate; if no improvement in ROC-AUC on validation data for 5 consecutive epochs,
terminate". Read literally: the rate is halved at the end of the 3rd consecutive epoch whose
validation loss is not below the best so far (then the count starts again, so a long plateau
halves it every 3 epochs); training stops at the end of the 5th consecutive epoch whose
validation AUC is not above the best so far. (torch's ReduceLROnPlateau(patience=3) would wait
for a 4th bad epoch.) State is plain numbers, stored in the resume file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Plateau", "RecipeSchedule", "EpochDecision"]


class Plateau:
    """Track the best value of a metric and the number of epochs since it improved.

    Args:
        mode: ``"min"`` (loss) or ``"max"`` (AUC).
        min_delta: an improvement must beat the best by more than this.
    """

    def __init__(self, mode: str, min_delta: float = 0.0) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode = mode
        self.min_delta = float(min_delta)
        self.best: float | None = None
        self.bad_epochs = 0

    def update(self, value: float) -> bool:
        """Record one epoch's value; return True if it improved on the best (a NaN never does)."""
        value = float(value)
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "min":
            improved = value < self.best - self.min_delta
        else:
            improved = value > self.best + self.min_delta
        if improved:
            self.best = value
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return improved

    def state_dict(self) -> dict:
        return {"mode": self.mode, "min_delta": self.min_delta, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.mode = str(state["mode"])
        self.min_delta = float(state["min_delta"])
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])


@dataclass(frozen=True)
class EpochDecision:
    """What the schedule decided at the end of an epoch."""

    lr: float  # the learning rate for the next epoch
    lr_halved: bool  # the rate was just reduced
    loss_improved: bool
    auc_improved: bool  # this epoch is the best so far: keep its checkpoint
    stop: bool  # early stopping: no further epoch


class RecipeSchedule:
    """Learning-rate halving on validation loss and early stopping on validation ROC-AUC.

    Args:
        lr: the initial learning rate.
        lr_patience: epochs without validation-loss improvement before the rate is multiplied
            by ``lr_factor`` (recipe: 3 and 0.5).
        stop_patience: epochs without validation-AUC improvement before stopping (recipe: 5).
    """

    def __init__(self, lr: float, lr_patience: int = 3, lr_factor: float = 0.5, stop_patience: int = 5) -> None:
        self.lr = float(lr)
        self.lr_patience = int(lr_patience)
        self.lr_factor = float(lr_factor)
        self.stop_patience = int(stop_patience)
        self.loss = Plateau("min")
        self.auc = Plateau("max")
        self.stopped = False

    def step(self, val_loss: float, val_auc: float) -> EpochDecision:
        """Record one epoch's validation loss and AUC and return the decision."""
        loss_improved = self.loss.update(val_loss)
        auc_improved = self.auc.update(val_auc)
        halved = False
        if self.loss.bad_epochs >= self.lr_patience:
            self.lr *= self.lr_factor
            self.loss.bad_epochs = 0  # count the next plateau afresh
            halved = True
        self.stopped = self.auc.bad_epochs >= self.stop_patience
        return EpochDecision(self.lr, halved, loss_improved, auc_improved, self.stopped)

    @property
    def best_auc(self) -> float | None:
        return self.auc.best

    def state_dict(self) -> dict:
        return {
            "lr": self.lr, "lr_patience": self.lr_patience, "lr_factor": self.lr_factor,
            "stop_patience": self.stop_patience, "stopped": self.stopped,
            "loss": self.loss.state_dict(), "auc": self.auc.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.lr_patience = int(state["lr_patience"])
        self.lr_factor = float(state["lr_factor"])
        self.stop_patience = int(state["stop_patience"])
        self.stopped = bool(state["stopped"])
        self.loss.load_state_dict(state["loss"])
        self.auc.load_state_dict(state["auc"])
