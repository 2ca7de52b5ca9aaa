"""``logger=…``: each record's epoch rows, mirrored where researchers look (TensorBoard).

``metrics.jsonl`` stays the record of truth; a logger only shows it. The TensorBoard mirror writes
its event files into the record's own folder (for stacked seeds, each ``seed<N>/``), so
``tensorboard --logdir results/`` shows every record of a sweep as its own run, side by side. One
point per tag and epoch, the epoch as the step:

- ``loss/train``, ``loss/test`` (``loss/val`` with ``data.split=validation``), ``error/train``,
  ``error/test`` (or ``error/val``), ``error/train_ema``, ``lr``, ``seconds`` (the epoch's);
  ``loss/train_eval`` and ``error/train_eval`` with ``trainer.eval_train=true``;
- with ``diagnostics.alignment=true``: ``alignment/<angle>/layer<i>`` (``delta_angle``,
  ``weight_angle``, and for FA ``fa_feedback_angle``), hidden layers counted from 1.

A value the jsonl records as null (a diverged loss, an undefined angle) gets no point.

Resume: when a process writes its first row into a record, it removes that record's old event
files and writes the rows of ``metrics.jsonl`` anew (the resume has already cut them back to the
checkpoint), then goes on row by row. So a resumed run shows each epoch once, whatever a kill left
behind, and a run resumed with ``logger=tensorboard`` added shows its whole history.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from .errors import UserError
from .records import METRICS

LOGGERS = ("none", "tensorboard")
EVENT_FILES = "events.out.tfevents.*"
NOT_SCALARS = ("epoch", "elapsed", "threads")   # the step itself, and bookkeeping

log = logging.getLogger(__name__)


def check(logger_cfg) -> None:
    """One sentence, before any data is loaded, for a logger that is unknown or not installed."""
    name = (logger_cfg or {}).get("name", "none")
    if name not in LOGGERS:
        raise UserError(f"logger={name!r} is not supported; choose one of: {', '.join(LOGGERS)}.")
    if name == "tensorboard":
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
        except ImportError:
            raise UserError('logger=tensorboard needs the tensorboard package, which is not installed; '
                            'install it with pip install -e ".[tensorboard]".') from None


def mirror(logger_cfg, directory) -> "TensorBoardMirror | None":
    """What mirrors the rows of the record in ``directory`` (None for ``logger=none``)."""
    name = (logger_cfg or {}).get("name", "none")
    return TensorBoardMirror(directory) if name == "tensorboard" else None


def tag(key: str) -> str:
    """``test_error`` → ``error/test``, ``train_error_ema`` → ``error/train_ema``, ``lr`` → ``lr``."""
    words = key.split("_")
    for metric in ("loss", "error"):
        if metric in words:
            words.remove(metric)
            return f"{metric}/{'_'.join(words)}"
    return key


def scalars(row: dict) -> list[tuple[str, float]]:
    """The TensorBoard ``(tag, value)`` points of one metrics row (finite numbers only)."""
    points = []
    for key, value in row.items():
        if key == "alignment":
            for kind, per_layer in value.items():
                if isinstance(per_layer, list):
                    points += [(f"alignment/{kind}/layer{i}", v) for i, v in enumerate(per_layer, 1)
                               if v is not None]
        elif key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
            points.append((tag(key), value))
    return [(t, float(v)) for t, v in points if math.isfinite(v)]


class TensorBoardMirror:
    """Event files for one record, written from the same rows as its ``metrics.jsonl``."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.writer = None
        self.failed = False

    def log_epoch(self, row: dict) -> None:
        """Called after ``row`` is in ``metrics.jsonl``. A failed write is said once; training goes on."""
        if self.failed:
            return
        try:
            if self.writer is None:
                self._start()   # writes every row of metrics.jsonl, this one included
            else:
                self._write(row)
            self.writer.flush()   # on disk with the jsonl line: a kill loses no point
        except OSError as err:
            self.failed = True
            log.warning(f"logger=tensorboard: could not write to {self.directory} ({err.strerror or err}); "
                        f"no more TensorBoard points for this record, metrics.jsonl has every epoch.")

    def _start(self) -> None:
        from torch.utils.tensorboard import SummaryWriter
        for old in self.directory.glob(EVENT_FILES):   # a killed or resumed run's: written anew
            old.unlink()
        self.writer = SummaryWriter(log_dir=str(self.directory))
        for line in (self.directory / METRICS).read_text().splitlines():
            self._write(json.loads(line))

    def _write(self, row: dict) -> None:
        for name, value in scalars(row):
            self.writer.add_scalar(name, value, global_step=row["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
