"""Learning-rate schedules of the author's code (``Main.lua``'s ``-epoch_step``).

- ``constant`` (``-epoch_step -1``, the paper's default): the LR never changes.
- ``step`` (``-epoch_step k``, k > 0): the LR halves after every k-th epoch.
- ``auto`` (``-epoch_step 0``): after an epoch whose online training error is ≥ the EMA of the
  training error (the EMA already updated with that epoch), the LR halves; the run ends after the
  first epoch that finds ``max_halvings`` (8) halvings already made.

Every schedule also stops at the early-stop threshold on the EMA (checked by the trainer first).
The decision comes after an epoch's training pass, so an epoch's ``lr`` in the records is the LR
it trained with.
"""
from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = ("constant", "step", "auto")


@dataclass(frozen=True)
class LRSchedule:
    kind: str = "constant"
    step_epochs: int = 0      # step: halve after every this many epochs
    max_halvings: int = 8     # auto: end the run once this many halvings are made

    def after_epoch(self, epoch: int, train_error: float, ema: float, halvings: int) -> tuple[int, bool]:
        """Main.lua's decision after epoch ``epoch`` → (halvings made so far, whether the run ends)."""
        if self.kind == "auto":
            if halvings >= self.max_halvings:
                return halvings, True
            if train_error >= ema:
                return halvings + 1, False
        elif self.kind == "step" and epoch % self.step_epochs == 0:
            return halvings + 1, False
        return halvings, False

    @staticmethod
    def lr(initial: float, halvings: int) -> float:
        return initial * 0.5 ** halvings

    def describe(self) -> dict:
        """The fields a run's summary.json records about its schedule."""
        return {"lr_schedule": self.kind,
                "lr_step_epochs": self.step_epochs if self.kind == "step" else None,
                "lr_max_halvings": self.max_halvings if self.kind == "auto" else None}
