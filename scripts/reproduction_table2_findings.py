"""The README's paragraph on Table 2, for scripts/reproduction.py: prose written by hand in
``reproduction_table2_findings.md`` (a Jinja template beside this file), every number in it filled
from the records: the rerun's on the author's summed step (``results/paper/cifar10/``) and the first
pass's on the batch-mean step (``results/paper/full-size-last-batch/cifar10/``).

Unlike the every-rule findings, this paragraph describes Table 2 while it fills, so it may cite a
cell with any number of seeds, and says how many each has (``coverage``). What it claims about them
(a plateau fell, a swing is within the 1.1 points the step was expected to reach) the template
checks with ``holds``: when the next seeds no longer bear a claim, the block stops with one
sentence naming it, and the prose is rewritten. Cells are named as the table's rows and rules:
``("3x1000 tanh", "dfa")``; ``step`` is ``"sum"`` (the rerun, the default) or ``"mean"`` (the first pass).
"""
from __future__ import annotations

import functools
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]   # the package, and the sibling reproduction_* modules

from dfa_cli.campaign.plans import SEED_PHASE  # noqa: E402
from dfa_cli.report.plateau import CurveFacts, curve_facts  # noqa: E402
from reproduction_experiments import TABLE2_FULL_SIZE  # noqa: E402
from reproduction_findings import FindingUnsupported, Quoted, holds, render, signed, span  # noqa: E402
from reproduction_tables import STEP_NAMES, TABLE2, cells_frame  # noqa: E402

TEMPLATE = Path(__file__).with_suffix(".md")
STEPS = {"sum": TABLE2, "mean": TABLE2_FULL_SIZE}
PLANNED_SEEDS = tuple(SEED_PHASE["table2"])   # every Table 2 cell's seeds, on the author's step
SWING_AIM = 1.1   # issue 47: the author's step should bring the MLP cells' swing to at most this many points
WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

Cell = tuple[str, str]   # (row, rule)


def _seeds(cell) -> tuple[int, ...]:
    """A cell's seeds (dfa-report lists them space-separated)."""
    return tuple(sorted(int(s) for s in str(cell.seeds).split()))


def count(n: int) -> str:
    """``n`` in words up to ten, as prose writes small numbers."""
    return WORDS[n] if 0 <= n < len(WORDS) else str(n)


class Table2Facts:
    """What the paragraph may say of Table 2's records under ``records``, on either step."""

    def __init__(self, records: Path):
        self.cells = {step: {(c.row, c.method): c for c in cells_frame(records, table).itertuples()}
                      for step, table in STEPS.items()}

    def _cell(self, row: str, rule: str, step: str, recorded: bool = True):
        """The cell; with ``recorded``, :class:`FindingUnsupported` if it has no record on ``step``."""
        cell = self.cells[step].get((row, rule))
        if cell is None:
            rows = ", ".join(dict.fromkeys(r for r, _ in self.cells[step]))
            raise FindingUnsupported(f"the Table 2 paragraph cites {row} {rule}, which Table 2 does not have (rows {rows})")
        if recorded and not cell.n:
            raise FindingUnsupported(f"the Table 2 paragraph cites {row} {rule.upper()} on {STEP_NAMES[step].split(' (')[0]}, "
                                     "which has no record yet")
        return cell

    @functools.cache
    def runs(self, cell: Cell, step: str = "sum") -> tuple[CurveFacts, ...]:
        return tuple(curve_facts(Path(p)) for p in self._cell(*cell, step).paths)

    def _mean(self, cell: Cell, step: str, field: str, digits: int = 2) -> Quoted:
        mean = statistics.fmean(getattr(f, field) for f in self.runs(cell, step))
        return Quoted(f"{mean:.{digits}f}", mean)

    def plateau(self, cell: Cell, step: str = "sum") -> Quoted:
        """The mean test error % of the last 50 epochs, mean over the cell's seeds."""
        return self._mean(cell, step, "plateau")

    def swing(self, cell: Cell, step: str = "sum") -> Quoted:
        """The mean |Δ test error| between consecutive epochs over the last 50, mean over the seeds."""
        return self._mean(cell, step, "swing")

    def calm_swing(self, cell: Cell, step: str = "sum") -> Quoted:
        """The swing with each spike replaced by its calm neighbours' mean, mean over the seeds."""
        return self._mean(cell, step, "calm_swing")

    def spikes(self, cell: Cell, step: str = "sum") -> int:
        """Epochs more than 3 points above their run's median over the last 50, over all the cell's runs."""
        return sum(f.spikes for f in self.runs(cell, step))

    def spike_errors(self, cell: Cell, step: str = "sum") -> str:
        """The spikes' test errors %, ``58.7 and 54.2``."""
        errors = [f"{e:.1f}" for f in self.runs(cell, step) for e in f.spike_errors]
        return " and ".join(errors) if len(errors) < 3 else ", ".join(errors[:-1]) + " and " + errors[-1]

    def epochs(self, cell: Cell, step: str = "sum") -> str:
        return span([float(f.epochs) for f in self.runs(cell, step)], 0)

    def single_epoch_spikes(self, cell: Cell, step: str = "sum") -> bool:
        """No two of a run's spikes are consecutive epochs: each is one epoch up and back."""
        return all(b - a > 1 for f in self.runs(cell, step) for a, b in zip(f.spike_epochs, f.spike_epochs[1:]))

    def paper(self, cell: Cell) -> Quoted:
        """The paper's cell, ``mean ± std`` as it prints it (``.value``: the mean)."""
        row = self._cell(*cell, "sum", recorded=False)
        return Quoted(row.paper_text.split(" (")[0], float(row.paper_mean))

    def paper_std(self, cell: Cell) -> float:
        return float(self._cell(*cell, "sum", recorded=False).paper_std)

    def fall(self, cell: Cell) -> Quoted:
        """How far the plateau fell from the first pass to the rerun, points (negative: it rose)."""
        change = self.plateau(cell, "mean").value - self.plateau(cell).value
        return Quoted(f"{change:.2f}", change)

    def above_paper(self, cells: list[Cell], step: str = "sum") -> Quoted:
        """Plateau minus the paper's mean, lowest–highest over ``cells`` (``.value``: the lowest)."""
        gaps = [self.plateau(c, step).value - self.paper(c).value for c in cells]
        return Quoted(span(gaps, 2), min(gaps))

    def swings(self, cells: list[Cell], step: str = "sum") -> Quoted:
        """The cells' swings, lowest–highest (``.value``: the highest)."""
        values = [self.swing(c, step).value for c in cells]
        return Quoted(span(values, 2), max(values))

    def run_swings(self, cell: Cell, step: str = "sum") -> str:
        """The cell's runs' swings, lowest–highest."""
        return span([f.swing for f in self.runs(cell, step)], 2)

    def spike_counts(self, cells: list[Cell], step: str = "sum") -> str:
        """The cells' spikes (each over all its runs), fewest–most."""
        return span([float(self.spikes(c, step)) for c in cells], 0)

    def records(self, step: str = "sum") -> int:
        return sum(int(c.n) for c in self.cells[step].values())

    def coverage(self, cells: list[Cell], step: str = "sum") -> str:
        """Which seeds the cells have: ``seed 0 of the six cells`` (one cell: ``seeds 0–2``), or how many
        cells have how many seeds where they differ."""
        seeds = [_seeds(self._cell(*c, step)) for c in cells]
        if len(set(seeds)) == 1:
            shown = span([float(s) for s in seeds[0]], 0) if seeds[0] == tuple(range(seeds[0][0], seeds[0][-1] + 1)) \
                else ", ".join(map(str, seeds[0]))
            named = f"seed{'s' if len(seeds[0]) > 1 else ''} {shown}"
            return named if len(cells) == 1 else f"{named} of the {count(len(cells))} cells"
        by_n = {n: sum(len(s) == n for s in seeds) for n in sorted({len(s) for s in seeds}, reverse=True)}
        return f"the {count(len(cells))} cells (" + ", ".join(
            f"{count(k)} with {count(n)} seed{'s' if n > 1 else ''}" for n, k in by_n.items()) + ")"

    def whole(self, cells: list[Cell]) -> bool:
        """Every cell has all its planned seeds on the author's step."""
        return all(set(PLANNED_SEEDS) <= set(_seeds(self._cell(*c, "sum"))) for c in cells)

    def flagged(self) -> list[Cell]:
        """The rerun's cells marked ⚑ in the table."""
        return [key for key, c in self.cells["sum"].items() if c.n and c.flagged]

    def delta(self, cell: Cell) -> Quoted:
        """The table's Δ: ours (the last epoch's mean) minus the paper's."""
        value = float(self._cell(*cell, "sum").delta)
        return Quoted(signed(value), value)


def table2_findings_block(records: Path, figure_files: list[Path], page: Path) -> str:
    """The README's paragraph on Table 2: the template rendered with :class:`Table2Facts`."""
    facts = Table2Facts(records)
    names = {name: getattr(facts, name) for name in (
        "plateau", "swing", "calm_swing", "spikes", "spike_errors", "single_epoch_spikes", "epochs", "paper", "paper_std", "fall",
        "above_paper", "swings", "run_swings", "spike_counts", "records", "coverage", "whole", "flagged", "delta")}
    return render(TEMPLATE, aim=SWING_AIM, count=count, **names)
