"""One function per figure kind; each returns the path it wrote, or None when it has no data.

Which figures a report gets, and their file names, are decided in :mod:`.gallery`.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .cells import method_order
from .spec import method_label
from .plots import (ERROR_FLOOR, colour, column, curve_legend, curve_title, draw_seeds, epoch_axis, log_axis,
                    new_figure, number, run_metrics, save, seed_series, wrap)

ALIGNMENT_TITLES = {"delta_angle": r"$\delta a_i$: rule vs BP", "weight_angle": r"$\Delta W_i$: rule vs BP",
                    "fa_feedback_angle": r"FA: $W_{i+1}^{\top}$ vs $B_{i+1}$"}
MAX_LAYER_LINES = 8  # deeper nets show this many layers, evenly spaced, first and last included
EVAL_KEYS = {"test": "test_error", "validation": "val_error"}   # validation runs log val_* instead
LEARNING_SERIES = (("train_error", "train, online (as the paper)", "--"),
                   ("train_error_eval", "train, clean eval pass", ":"))


def _floored(series) -> bool:
    return any((s <= ERROR_FLOOR).any() for s in series)


def _error_label(floored: bool) -> str:
    """An error axis; it says where an error of 0 is drawn, when one is (a log axis has no 0)."""
    return "error (%)" + (f", 0 drawn at {ERROR_FLOOR:g}" if floored else "")


def _sorted_cells(cells: pd.DataFrame) -> list:
    order = {m: i for i, m in enumerate(method_order(cells["method"]))}
    return sorted(cells.itertuples(index=False), key=lambda c: order[c.method])


def test_error_figure(title: str, cells: pd.DataFrame, path: Path, split: str = "test") -> Path | None:
    """A row's test (or validation) error vs epoch, one colour per method; the paper's value dotted
    where it has one."""
    fig, axes = new_figure(6.0, 3.8)
    ax, drawn, tails, paper_lines = axes[0][0], False, False, False
    for cell in _sorted_cells(cells):
        series = seed_series(cell.paths, column(EVAL_KEYS[split]))
        if not series:
            continue
        drawn = True
        tails |= draw_seeds(ax, series, colour(cell.method), f"{method_label(cell.method)}{cell.mark}")
        paper = getattr(cell, "paper_mean", math.nan)
        if isinstance(paper, float) and math.isfinite(paper):
            ax.axhline(paper, color=colour(cell.method), linestyle=":", linewidth=1.2)
            paper_lines = True
    if not drawn:
        plt.close(fig)
        return None
    epoch_axis(ax)
    ax.set_ylabel(f"{split} error (%)")
    log_axis(ax)
    curve_legend(ax, paper_lines, tails, loc="best")
    ax.set_title(wrap(title, 6.0))
    return save(fig, path)


def learning_figure(title: str, cells: pd.DataFrame, path: Path, split: str = "test") -> Path | None:
    """One panel per method: online and clean training error and test error vs epoch (log scale)."""
    series_kinds = LEARNING_SERIES + ((EVAL_KEYS[split], split, "-"),)
    cells = _sorted_cells(cells)
    width = max(4.5, 3.0 * len(cells) + 0.8)
    fig, axes = new_figure(width, 3.4, ncols=len(cells), sharey=True)
    drawn, tails, floored = set(), False, False
    for ax, cell in zip(axes[0], cells):
        for key, label, style in series_kinds:
            series = seed_series(cell.paths, column(key), floor=ERROR_FLOOR)
            tails |= draw_seeds(ax, series, colour(cell.method), None, linestyle=style)
            drawn |= {key} if series else set()
            floored |= _floored(series)
        ax.set_title(f"{method_label(cell.method)}{cell.mark}, n={cell.n}", color=colour(cell.method))
        epoch_axis(ax)
    if not drawn:
        plt.close(fig)
        return None
    first = axes[0][0]
    first.set_ylabel(_error_label(floored))
    log_axis(first)
    for key, label, style in series_kinds:   # a key to the line styles drawn, in grey, below the panels
        if key in drawn:
            first.plot([], [], color="#555555", linestyle=style, label=label)
    handles, labels = first.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), frameon=False,
               title=curve_title(axes[0], tails).replace("\n", "; "))
    fig.suptitle(wrap(title, width))
    return save(fig, path)


def depth_figure(title: str, cells: pd.DataFrame, path: Path) -> Path | None:
    """The 100-hidden-layer experiment: each method's test (solid) and online training (dashed) error."""
    fig, axes = new_figure(6.0, 3.8)
    ax, drawn, tails, floored = axes[0][0], False, False, False
    for cell in _sorted_cells(cells):
        for key, style, what in (("test_error", "-", "test"), ("train_error", "--", "train")):
            series = seed_series(cell.paths, column(key), floor=ERROR_FLOOR)
            tails |= draw_seeds(ax, series, colour(cell.method), f"{method_label(cell.method)}{cell.mark} {what}",
                                linestyle=style)
            drawn |= bool(series)
            floored |= _floored(series)
    if not drawn:
        plt.close(fig)
        return None
    epoch_axis(ax)
    ax.set_ylabel(_error_label(floored))
    log_axis(ax)
    curve_legend(ax, False, tails, loc="best", ncol=2)
    ax.set_title(wrap(title, 6.0))
    return save(fig, path)


def _angles(row, key: str, where: str) -> list | None:
    """A row's angles of one kind (a list, None per undefined layer); bad data is named."""
    alignment = row.get("alignment")
    if alignment is None:
        return None
    if not isinstance(alignment, dict):
        raise ValueError(f"{where}: 'alignment' is {type(alignment).__name__}, not an object of per-layer lists")
    values = alignment.get(key)
    if values is not None and not isinstance(values, list):
        raise ValueError(f"{where}: alignment {key!r} is {values!r}, not a list")
    return [number(v, f"{where}: alignment {key!r}") for v in values] if values is not None else None


def _shown_layers(n: int) -> list[int]:
    if n <= MAX_LAYER_LINES:
        return list(range(n))
    return sorted({round(i * (n - 1) / (MAX_LAYER_LINES - 1)) for i in range(MAX_LAYER_LINES)})


def alignment_figure(title: str, paths: list[str], path: Path) -> Path | None:
    """Angle vs epoch per hidden layer, one panel per measured angle; mean and min–max over seeds."""
    found = {}   # angle kind → number of layers
    undefined = set()   # epochs whose angle is undefined for some layer (a zero vector)
    for p in paths:
        for row in run_metrics(str(p)):
            where = f"{p} epoch {row.get('epoch')}"
            for key in ALIGNMENT_TITLES:
                values = _angles(row, key, where)
                if values is not None:
                    found[key] = max(found.get(key, 0), len(values))
                    if any(v is None for v in values):
                        undefined.add(row.get("epoch"))
    if not found:
        return None
    keys = [k for k in ALIGNMENT_TITLES if k in found]
    n_layers = max(found.values())
    layers = _shown_layers(n_layers)
    cmap = plt.get_cmap("viridis")   # dark (first layer) to green (last); its yellow end is faint on white
    width = 3.1 * len(keys) + 1.6
    fig, axes = new_figure(width, 3.4, ncols=len(keys), sharey=True)
    for ax, key in zip(axes[0], keys):
        for j, layer in enumerate(layers):
            def get(row, where, key=key, layer=layer):
                values = _angles(row, key, where) or []
                return values[layer] if layer < len(values) else None
            draw_seeds(ax, seed_series(paths, get), cmap(0.85 * j / max(1, len(layers) - 1)), f"hidden {layer + 1}")
        ax.axhline(90, color="grey", linestyle=":", linewidth=1)
        ax.set_title(ALIGNMENT_TITLES[key])
        ax.set_ylim(0, 180)
        ax.yaxis.set_major_locator(plt.MultipleLocator(30))
        epoch_axis(ax)
    axes[0][0].set_ylabel("angle (degrees); 90 = orthogonal")
    shown = "" if len(layers) == n_layers else f"{len(layers)} of {n_layers} layers; "
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[0][-1].legend(handles, [label.split(" (n=")[0] for label in labels], loc="upper left",
                       bbox_to_anchor=(1.02, 1), title=f"{shown}mean, min–max\nover {len(paths)} seed(s)")
    if undefined:
        epochs = ", ".join(str(e) for e in sorted(e for e in undefined if isinstance(e, int))[:6])
        fig.text(0.01, -0.02, wrap(f"No point at epoch {epochs} for some layers: the angle is undefined where "
                                   f"a vector is zero (from the zero start, BP's hidden-layer gradient is 0).",
                                   width, 8), fontsize=7.5, ha="left", va="top")
    fig.suptitle(wrap(f"{title}: angle between the rule's update and the true BP gradient", width))
    return save(fig, path)


SHORTENED_KEY = "† ‡ …: shortened runs (see the table)"


def annotate_marks(ax, xs, ys, marks: pd.Series) -> None:
    """The table's mark (†, ‡, …) beside each point of a shortened run: not the paper's protocol."""
    for x, y, mark in zip(xs, ys, marks.fillna("")):
        if mark and isinstance(x, float) and math.isfinite(x):
            ax.annotate(mark, (x, y), xytext=(5, -2), textcoords="offset points", fontsize=9)


def row_chart(frame: pd.DataFrame, base_height: float, per_bar: float):
    """A horizontal chart with one band per table row and one bar per method in it."""
    labels = list(dict.fromkeys(frame["row"]))
    methods = method_order(frame["method"])
    fig, axes = new_figure(6.0, base_height + per_bar * len(labels) * len(methods))
    return fig, axes[0][0], labels, methods


def by_method(frame: pd.DataFrame, labels: list[str], methods: list[str]):
    """Each method's rows in table order, with y positions that set a row's methods side by side."""
    for i, method in enumerate(methods):
        y = [j + (i - (len(methods) - 1) / 2) * 0.8 / len(methods) for j in range(len(labels))]
        yield method, frame[frame["method"] == method].set_index("row").reindex(labels), y


def label_rows(ax, labels: list[str]) -> None:
    """One tick per table row, the first at the top, as in the table."""
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()


def ours_vs_paper_figure(title: str, cells: pd.DataFrame, path: Path) -> Path | None:
    """A paper table's rows that have runs of ours: ours (filled) beside the paper (open), ± std,
    one colour per method; a log axis when the errors span a factor of 3 or more."""
    rows = cells.groupby("row_id").filter(lambda r: r["ours_mean"].notna().any())
    if rows.empty:
        return None
    fig, ax, labels, methods = row_chart(rows, 1.4, 0.32)
    for method, m, y in by_method(rows, labels, methods):
        ax.errorbar(m["ours_mean"], y, xerr=m["ours_std"].fillna(0), fmt="o", color=colour(method),
                    markersize=5, capsize=2, label=f"{method_label(method)}, ours")
        ax.errorbar(m["paper_mean"], [v + 0.12 / len(methods) for v in y], xerr=m["paper_std"].fillna(0), fmt="D",
                    color=colour(method), markerfacecolor="white", markersize=4, capsize=2, alpha=0.9,
                    label=f"{method_label(method)}, paper")
        annotate_marks(ax, m["ours_mean"], y, m["mark"])
    label_rows(ax, labels)
    ax.set_xlabel("test error (%), mean ± std")
    log_axis(ax, axis="x")
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(methods), frameon=False,
               title=f"filled: ours, open: the paper; {SHORTENED_KEY}")
    ax.set_title(wrap(title, 6.0))
    return save(fig, path)


def paired_figure(title: str, pairs: pd.DataFrame, path: Path) -> Path | None:
    """Each method − BP per row over matched seeds: mean and 95 % interval; 0 = no difference."""
    pairs = pairs[pairs["n_pairs"] > 0]
    if pairs.empty:
        return None
    fig, ax, labels, methods = row_chart(pairs, 1.2, 0.35)
    for method, m, y in by_method(pairs, labels, methods):
        low = (m["mean_diff"] - m["ci_low"]).fillna(0)
        high = (m["ci_high"] - m["mean_diff"]).fillna(0)
        ax.errorbar(m["mean_diff"], y, xerr=[low, high], fmt="o", color=colour(method), capsize=3,
                    markersize=4, label=f"{method_label(method)} − BP")
        annotate_marks(ax, m["mean_diff"], y, m["mark"])   # pairs of shortened runs
    ax.axvline(0, color="grey", linewidth=1)
    label_rows(ax, labels)
    ax.set_xlabel("difference in test error (percentage points), mean and 95 % interval")
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(methods), frameon=False,
               title="over matched seeds; a dot without a bar: one pair"
               + (f"; {SHORTENED_KEY}" if (pairs["mark"] != "").any() else ""))
    ax.set_title(wrap(title, 6.0))
    return save(fig, path)
