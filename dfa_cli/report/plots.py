"""The figures' common look and the curves they are drawn from.

One colour per method in every figure (Okabe–Ito, safe for colour-blind readers); wrapped titles;
log axes with ticks at 1-2-5; small PNGs. Curves are the mean over seeds (band: min–max) while
every seed runs; where some seeds have stopped, the others go on as thin single-seed lines, so a
mean never silently averages fewer seeds than its label says.
"""
from __future__ import annotations

import math
import textwrap
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from .collect import read_metrics  # noqa: E402
from .spec import METRICS  # noqa: E402

METHOD_COLOURS = {  # Okabe & Ito (2008); fixed, so a method looks the same in every figure
    "bp": "#0072B2", "fa": "#E69F00", "dfa": "#009E73", "ifa": "#CC79A7", "shallow": "#000000",
    "drtp": "#56B4E9", "usf": "#D55E00", "brsf": "#999999", "frsf": "#F0E442",
}
DPI = 100                # small PNGs: some are committed
ERROR_FLOOR = 1e-3       # percent: an error of 0 is drawn here on a log axis
STYLE = {"font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5, "legend.fontsize": 7.5,
         "legend.title_fontsize": 7.5, "figure.dpi": DPI, "savefig.dpi": DPI, "axes.grid": True,
         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False, "mathtext.default": "regular"}


def colour(method: str) -> str:
    return METHOD_COLOURS.get(method, "#666666")


def new_figure(width: float, height: float, ncols: int = 1, **kw):
    """A figure of ``ncols`` panels, laid out by matplotlib's constrained layout (titles, legends
    outside the axes and labels never overlap); drawn in :data:`STYLE` when the gallery draws it."""
    return plt.subplots(1, ncols, figsize=(width, height), squeeze=False, layout="constrained", **kw)


def wrap(text: str, width_inches: float, fontsize: float = 9) -> str:
    """A title that fits its figure: wrapped at about the characters its width holds."""
    return textwrap.fill(text, width=max(30, int(width_inches * 72 / (fontsize * 0.55))))


def save(fig, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def log_axis(ax, axis: str = "y") -> None:
    """A log axis with ticks at 1, 2, 5 × 10^k (more within a decade, 10^k alone over many),
    written plainly (0.05, 0.1, 0.2 …); a linear one
    when the data span less than a factor of 3 (a log axis would show no tick)."""
    low, high = (ax.dataLim.y0, ax.dataLim.y1) if axis == "y" else (ax.dataLim.x0, ax.dataLim.x1)
    which = ax.yaxis if axis == "y" else ax.xaxis
    if not (low > 0 and high / low >= 3):
        which.set_major_locator(MaxNLocator(nbins=6))
        return
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    decades = math.log10(high / low)   # enough ticks to read a value, never a crowd of them
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades <= 1.2 else (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)
    which.set_major_locator(LogLocator(base=10, subs=subs))
    which.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    which.set_minor_formatter(NullFormatter())


def epoch_axis(ax) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# ---- curves from metrics.jsonl ---------------------------------------------------------------------
@lru_cache(maxsize=4096)
def run_metrics(path: str) -> tuple:
    rows, _ = read_metrics(Path(path) / METRICS)   # a bad line ends the curve there (listed elsewhere)
    return tuple(rows)


def number(value, where: str):
    """A metric value: a number, or None for "none this epoch"; anything else is bad data, named."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return None if value is None or not math.isfinite(value) else float(value)
    raise ValueError(f"{where} is {value!r}, not a number")


def column(key: str):
    """A getter of ``key`` from a metrics row."""
    return lambda row, where: number(row.get(key), f"{where}: {key!r}")


def seed_series(paths, get, floor: float | None = None) -> list[pd.Series]:
    """Per run with any value: ``get(row)`` by epoch (NaN where a row has none)."""
    out = []
    for path in paths:
        values = {}
        for row in run_metrics(str(path)):
            epoch = row.get("epoch")
            if isinstance(epoch, int) and not isinstance(epoch, bool):
                values[epoch] = get(row, f"{path}/{METRICS} epoch {epoch}")
        series = pd.Series(values, dtype=float).sort_index()
        if series.notna().any():
            out.append(series.clip(lower=floor) if floor is not None else series)
    return out


def draw_seeds(ax, series: list[pd.Series], color: str, label: str | None, linestyle: str = "-",
               band: bool = True) -> bool:
    """Mean (and min–max band) over the seeds up to the last epoch they all reached; beyond it,
    each seed that ran on as a thin line of its own. Returns whether such single-seed tails exist."""
    if not series:
        return False
    frame = pd.concat(series, axis=1)
    common = min(s.index.max() for s in series)
    head = frame.loc[:common].dropna(how="all")
    ax.plot(head.index, head.mean(axis=1), color=color, linestyle=linestyle, linewidth=1.6,
            label=None if label is None else f"{label} (n={len(series)})")
    if band and len(series) > 1:
        ax.fill_between(head.index, head.min(axis=1), head.max(axis=1), color=color, alpha=0.18, linewidth=0)
    tails = [s.loc[common:].dropna() for s in series if s.index.max() > common]
    for tail in tails:
        ax.plot(tail.index, tail.values, color=color, linestyle=linestyle, linewidth=0.7, alpha=0.7)
    return bool(tails)


def curve_title(axes, tails: bool) -> str:
    """What the lines of ``axes`` are: a mean, a band where one is drawn (more than one seed)."""
    bands = any(ax.collections for ax in axes)   # fill_between's bands are the only collections
    return "mean over seeds" + (", band: min–max" if bands else "") + \
        ("\nthin: single seeds after others stopped" if tails else "")


def curve_legend(ax, paper_lines: bool, tails: bool, **kw) -> None:
    """The legend, saying what the lines are, and only what is drawn."""
    title = curve_title([ax], False)
    if tails:
        title += "\nthin: single seeds after others stopped"
    if paper_lines:
        title += "\ndotted: the paper"
    ax.legend(title=title, **kw)
