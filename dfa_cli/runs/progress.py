"""What a run shows while it trains: a rich progress bar on a terminal, one log line per epoch otherwise."""
from __future__ import annotations

import logging
import sys

log = logging.getLogger("dfa_cli")


def _fmt(value, spec: str) -> str:
    return "nan" if value is None else format(value, spec)


def epoch_line(epoch: int, max_epochs: int, rows: list[dict], active: int) -> str:
    """``rows``: this epoch's metrics of the replicas still training (shown as their mean)."""
    def mean(key):
        values = [r[key] for r in rows if r.get(key) is not None]
        return sum(values) / len(values) if values else None
    seeds = f" [{active} seeds]" if active > 1 else ""
    key = "val" if any("val_error" in r for r in rows) else "test"
    lr = f"  lr {rows[0]['lr']:.3g}" if rows and rows[0].get("lr") is not None else ""
    return (f"epoch {epoch}/{max_epochs}{seeds}  loss {_fmt(mean('train_loss'), '.4f')}  "
            f"train {_fmt(mean('train_error'), '.2f')}%  {key} {_fmt(mean(f'{key}_error'), '.2f')}%{lr}  "
            f"({_fmt(mean('seconds'), '.2f')} s)")


class Progress:
    """Context manager: ``update(epoch, rows, active)`` once per epoch."""

    def __init__(self, max_epochs: int, title: str, enabled="auto"):
        self.max_epochs, self.title = max_epochs, title
        self.bar = None
        if enabled is True or (enabled == "auto" and sys.stderr.isatty()):
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)
            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                                    TextColumn("ETA"), TimeRemainingColumn(), transient=False)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(self.title, total=self.max_epochs, stats="")
        return self

    def update(self, epoch: int, rows: list[dict], active: int) -> None:
        line = epoch_line(epoch, self.max_epochs, rows, active)
        if self.bar is None:
            log.info(line)
        else:
            self.bar.update(self.task, completed=epoch, stats=line.split("  ", 1)[1])

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
