"""Figures for ``dfa-report --out``: test-error curves per table row and ours-vs-paper bar charts.

matplotlib (Agg, no display) is imported only here, and this module only when ``--out`` is given.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator, ScalarFormatter  # noqa: E402

from .report import METRICS, Report, View, read_metrics  # noqa: E402


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def seed_curve(paths: list[str], column: str = "test_error") -> pd.DataFrame:
    """Per epoch over seeds: mean, min and max of ``column`` (epochs a seed did not reach are skipped)."""
    rows = [{"epoch": r.get("epoch"), "value": r.get(column)}
            for path in paths for r in read_metrics(Path(path) / METRICS)]
    frame = pd.DataFrame(rows, columns=["epoch", "value"]).apply(pd.to_numeric, errors="coerce").dropna()
    return frame.groupby("epoch")["value"].agg(["mean", "min", "max"])


def curves_figure(view: View, row_cells: pd.DataFrame, path: Path) -> Path | None:
    """One row of a table: each method's test-error curve, mean over seeds with a min–max band."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    for i, cell in enumerate(row_cells.itertuples(index=False)):
        curve = seed_curve(cell.paths)
        if curve.empty:
            continue
        color = f"C{i}"
        ax.plot(curve.index, curve["mean"], color=color, label=f"{cell.method.upper()}, n={cell.n}")
        ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=0.2, linewidth=0)
        paper_mean = getattr(cell, "paper_mean", math.nan)
        if math.isfinite(paper_mean):
            ax.axhline(paper_mean, color=color, linestyle=":", linewidth=1)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    first = row_cells.iloc[0]
    setting = f" [{first['setting']}]" if first["setting"] else ""
    ax.set_title(f"{view.title.split(':')[0]} — {first['row']}{setting}", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error %")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="mean, min–max over seeds\n(dotted: the paper)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def bars_figure(view: View, path: Path) -> Path | None:
    """A paper table's rows that have runs of ours: ours (solid) beside the paper (hatched), ± std."""
    cells = view.frame
    rows = cells.groupby("row_id").filter(lambda r: r["ours_mean"].notna().any())
    if rows.empty:
        return None
    labels = list(dict.fromkeys(rows["row"]))
    methods = list(dict.fromkeys(rows["method"]))
    width = 0.8 / (2 * len(methods))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * len(labels) * len(methods) + 1), 4.5))
    for i, method in enumerate(methods):
        m = rows[rows["method"] == method].set_index("row").reindex(labels)
        x = [j + (2 * i - len(methods) + 0.5) * width for j in range(len(labels))]
        ax.bar(x, m["ours_mean"], width, yerr=m["ours_std"].fillna(0), color=f"C{i}", capsize=2,
               label=f"{method.upper()} ours")
        ax.bar([v + width for v in x], m["paper_mean"], width, yerr=m["paper_std"].fillna(0),
               color=f"C{i}", alpha=0.35, hatch="//", capsize=2, label=f"{method.upper()} paper")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test error % (mean ± std)")
    ax.set_title(view.title, fontsize=9)
    ax.legend(fontsize=7, ncol=len(methods))
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_figures(report: Report, out: Path) -> list[Path]:
    """Curves for every row with runs, a bar chart per paper table; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for view in report.views:
        if "paths" not in view.frame:
            continue
        for row_id, row_cells in view.frame.groupby("row_id"):
            row_cells = row_cells[row_cells["n"] > 0]
            if row_cells.empty:
                continue
            first = row_cells.iloc[0]
            name = first["row"] if view.key != "other_runs" else f"{first['data']} {first['row']} {first['setting']}"
            name = _slug(name)[:60]
            written.append(curves_figure(view, row_cells, out / f"{view.key}_curves_{row_id:02d}_{name}.png"))
        if view.key != "other_runs":
            written.append(bars_figure(view, out / f"{view.key}_bars.png"))
    return [p for p in written if p is not None]
