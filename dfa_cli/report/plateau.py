"""Where a run's test error settles, read from its ``metrics.jsonl``.

The tables report the last epoch, as the author's code does. Where a net's test error swings from
epoch to epoch around a plateau (CIFAR-10's MLPs), the last epoch is one draw from that swing; these
facts say where the plateau lies, how far the last epoch fell from it, and where the lowest epoch
came compared with the online training error, so a cell's paragraph can quote the records instead
of hand-copied numbers.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import NamedTuple

from .collect import read_metrics
from .spec import METRICS, SUMMARY

PLATEAU_EPOCHS = 50   # the plateau: the mean test error over a run's last 50 epochs
SPIKE_POINTS = 3.0    # a spike: an epoch this many points above its run's median over those epochs


class CurveFacts(NamedTuple):
    epochs: int
    last: float                   # test error % at the last epoch (the table's number)
    plateau: float                # mean test error % over the last ``window`` epochs
    window: int                   # how many epochs ``plateau`` averages (fewer if the run is shorter)
    swing: float                  # mean |Δ test error| between consecutive epochs, over the same epochs
    spikes: int                   # epochs of the same window > SPIKE_POINTS above its median (each counts twice in swing)
    spike_epochs: tuple           # ... which epochs those are
    spike_errors: tuple           # ... and their test errors %
    calm_swing: float             # the swing with each spike replaced by the mean of its nearest calm neighbours
    lowest: float                 # the lowest test error % of any epoch ...
    lowest_epoch: int             # ... at this epoch (the first, on a tie)
    train_end: float              # online training error % at the last epoch
    train_at_lowest: float        # ... at the lowest epoch
    reaches_train: int | None     # the first epoch whose online training error ≤ a given level


def curve_facts(run: Path, train_level: float | None = None, window: int = PLATEAU_EPOCHS) -> CurveFacts:
    """The facts of one run folder; ``train_level`` (%, e.g. the paper's training error) sets
    ``reaches_train``. Raises ValueError for a run without a logged epoch."""
    rows, _ = read_metrics(Path(run) / METRICS)
    if not rows:
        raise ValueError(f"{run}: no logged epoch in {METRICS}")
    test = [float(r["test_error"]) for r in rows]
    low = min(range(len(test)), key=test.__getitem__)
    tail = test[-window:]
    reaches = None if train_level is None else next(
        (int(r["epoch"]) for r in rows if float(r["train_error"]) <= train_level), None)
    median = statistics.median(tail)
    first = len(test) - len(tail)
    spiked = [first + i for i, t in enumerate(tail) if t > median + SPIKE_POINTS]
    return CurveFacts(epochs=int(rows[-1]["epoch"]), last=test[-1], plateau=sum(tail) / len(tail), window=len(tail),
                      swing=_swing(test, window),
                      spikes=len(spiked), spike_epochs=tuple(int(rows[i]["epoch"]) for i in spiked),
                      spike_errors=tuple(test[i] for i in spiked),
                      calm_swing=_swing(_without(test, set(spiked)), window), lowest=test[low], lowest_epoch=int(rows[low]["epoch"]),
                      train_end=float(rows[-1]["train_error"]), train_at_lowest=float(rows[low]["train_error"]),
                      reaches_train=reaches)


def _swing(test: list[float], window: int) -> float:
    """The mean |Δ test error| between each of the last ``window`` epochs and the one before."""
    steps = [abs(test[i] - test[i - 1]) for i in range(max(1, len(test) - window), len(test))]
    return sum(steps) / len(steps) if steps else math.nan


def _without(test: list[float], spiked: set[int]) -> list[float]:
    """``test`` with each spiked epoch replaced by the mean of the nearest epochs on either side that
    are not spikes (one side at the run's ends): the curve as it would run without its jumps."""
    calm = [i for i in range(len(test)) if i not in spiked]
    out = list(test)
    for i in spiked:
        sides = [j for j in (max((j for j in calm if j < i), default=None),
                             min((j for j in calm if j > i), default=None)) if j is not None]
        out[i] = sum(test[j] for j in sides) / len(sides) if sides else test[i]
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1, as the tables); the std is NaN for one value."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def _over_seeds(facts: list[CurveFacts], field: str) -> str:
    """One field's mean ± std over a cell's runs (two or more), as the cell row shows it."""
    mean, std = mean_std([getattr(f, field) for f in facts])
    return f"{mean:.2f} ± {std:.2f}"


def plateau_markdown(cells, title: str) -> str:
    """Every run of ``cells`` (dfa-report's cell frame: row, method, paths, paper values), under a
    lead sentence naming ``title``, one table per row: the last epoch beside the plateau, the lowest
    epoch and the online training error, and, for a cell of several seeds, their mean ± std beside
    the paper's value."""
    parts = [f"{title}: every full-protocol run of each cell, read from its `metrics.jsonl` "
             "(`dfa_cli/report/plateau.py`): the test error % at the last epoch (the table's number), its "
             f"mean over the last {PLATEAU_EPOCHS} epochs (the plateau), how far it moves from one epoch to the next over "
             f"them (the swing: the mean |Δ test error|, in points), the lowest epoch's, the online training error % at the "
             "end and at the lowest epoch, and the first epoch whose online training error is at or below "
             "the paper's. Cell rows: mean ± std over seeds (ddof=1), beside the paper's value (training error).", ""]
    for row, row_cells in cells.groupby("row", sort=False):
        parts += [f"**{row}**", "",
                  f"| Run | last epoch | mean of the last {PLATEAU_EPOCHS} | swing | lowest (epoch) | online training error: "
                  "end; at the lowest | first epoch at the paper's training error | paper (training error) |",
                  "|---|---|---|---|---|---|---|---|"]
        for cell in row_cells.itertuples():
            runs = sorted((json.loads((Path(p) / SUMMARY).read_text())["seed"],
                           curve_facts(Path(p), cell.paper_train_error)) for p in cell.paths)
            for seed, f in runs:
                parts.append(f"| {cell.method.upper()}, seed {seed} | {f.last:.2f} | {f.plateau:.2f} | {f.swing:.2f} | {f.lowest:.2f} "
                             f"({f.lowest_epoch}) | {f.train_end:.2f}; {f.train_at_lowest:.2f} | "
                             f"{f.reaches_train or 'not reached'} | {cell.paper_text if len(runs) == 1 else ''} |")
            if len(runs) > 1:
                facts = [f for _, f in runs]
                parts.append(f"| **{cell.method.upper()}, n={len(facts)}** | **{_over_seeds(facts, 'last')}** | "
                             f"**{_over_seeds(facts, 'plateau')}** | {_over_seeds(facts, 'swing')} | "
                             f"**{_over_seeds(facts, 'lowest')}** | "
                             f"{_over_seeds(facts, 'train_end')}; {_over_seeds(facts, 'train_at_lowest')} | | "
                             f"{cell.paper_text} |")
        parts.append("")
    return "\n".join(parts)


def _cell_facts(cell) -> list[CurveFacts]:
    return [curve_facts(Path(p)) for p in cell.paths]


def noise_markdown(cells) -> str:
    """Per row and rule, over a cell's seeds: the plateau (the mean test error of the last
    ``PLATEAU_EPOCHS`` epochs) and the swing (the mean |Δ test error| between consecutive epochs over
    them), each as the mean over seeds, and the spikes over all its seeds' runs. ``cells``: dfa-report's
    cell frame."""
    methods = list(dict.fromkeys(cells["method"]))
    lines = [f"| Model | {' | '.join(m.upper() for m in methods)} |", "|---|" + "---|" * len(methods)]
    for row, row_cells in cells.groupby("row", sort=False):
        by_method = {c.method: _cell_facts(c) for c in row_cells.itertuples()}
        shown = []
        for m in methods:
            facts = by_method.get(m) or []
            shown.append("—" if not facts else
                         f"{statistics.fmean(f.plateau for f in facts):.2f}, swing "
                         f"{statistics.fmean(f.swing for f in facts):.2f}, spikes {sum(f.spikes for f in facts)} "
                         f"(n={len(facts)})")
        lines.append(f"| {row} | {' | '.join(shown)} |")
    return "\n".join(lines + ["", f"- Plateau: the mean test error % over a run's last {PLATEAU_EPOCHS} epochs; swing: "
                              "the mean |Δ test error| (points) between each of those epochs and the one before; "
                              "both averaged over the cell's seeds (n). Spikes: those epochs, over all the cell's "
                              f"runs, whose test error lies more than {SPIKE_POINTS:g} points above their run's median "
                              "over the same epochs: a one-epoch jump that the swing counts twice, there and back."])
