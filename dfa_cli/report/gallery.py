"""Which figures a report gets, what their files are called, and drawing each one on its own.

A figure that fails (bad data in a record, a broken features file …) is named with its reason;
every other figure is still drawn. File names say what a figure is —
``<kind>_<table>_<row>[_<setting>][_<method>].png`` — and are never cut short: a name too long
for a file system keeps its start and ends with a hash of the whole.

- ``test-error_…``: a row's test error vs epoch, one colour per method, the paper's value dotted;
- ``learning-curves_…``: a panel per method: online and clean training error and test error;
- ``alignment_…_<method>``: the angle between the rule's update and BP's, per hidden layer (none for
  BP itself, whose angle is 0 by definition);
- ``depth_…``: the 100-hidden-layer row, each method's training and test error on one axis;
- ``tsne_…``: t-SNE maps of saved hidden features, a row per method, a column per layer;
- ``ours-vs-paper_<table>``: a paper table's cells, ours beside the paper, ± std;
- ``paired-vs-bp_<table>``: each method − BP per row over matched seeds, with 95 % intervals.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt

from . import figures as fig
from .plots import STYLE
from .spec import FEATURES, TABLES, method_label
from .tsne import tsne_figure

MAX_NAME = 150   # characters before ".png"; most file systems allow 255
GROUPED = {"other_runs": "Other runs", "validation_runs": "Validation runs"}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-.")


def figure_name(kind: str, *parts: str) -> str:
    name = "_".join([kind, *(slug(p) for p in parts if p)])
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name + ".png"


@dataclass
class Gallery:
    out: Path
    tsne_points: int = 1000
    progress: object = None                       # callable(str) for long computations, or None
    figures: dict = field(default_factory=dict)   # view key → [(path relative to report.md, caption)]
    failures: list = field(default_factory=list)  # (file name, reason)
    written: list = field(default_factory=list)

    def attempt(self, view_key: str, name: str, caption: str, draw, *args, **kw) -> None:
        """Draw one figure; a failure is recorded with its reason, and the others go on."""
        try:
            path = draw(*args, self.out / name, **kw)
        except Exception as err:   # bad data of one record must not cost the other figures
            plt.close("all")
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            self.failures.append((name, reason[:300]))
            return
        if path is not None:
            self.written.append(path)
            self.figures.setdefault(view_key, []).append((f"{self.out.name}/{path.name}", caption))


def _feature_runs(cells) -> list[tuple[str, Path]]:
    """(method, features.npz) per cell that has one: the first of its runs that saved features."""
    found = []
    for cell in cells.itertuples(index=False):
        files = [Path(p) / FEATURES for p in cell.paths if (Path(p) / FEATURES).is_file()]
        if files:
            found.append((cell.method, files[0]))
    return found


def draw_view(g: Gallery, view) -> None:
    frame, key = view.frame, view.key
    if key.endswith("_paired"):
        table = key.removesuffix("_paired")
        g.attempt(key, figure_name("paired-vs-bp", table), f"{view.title}: mean and 95 % interval",
                  fig.paired_figure, view.title, frame)
        return
    if "paths" not in frame:
        return
    grouped = key in GROUPED
    split = "validation" if key == "validation_runs" else "test"
    table_title = GROUPED.get(key) or next(t for k, t in TABLES.values() if k == key)
    if not grouped:   # the whole table at a glance first, then row by row
        g.attempt(key, figure_name("ours-vs-paper", key), f"{table_title}: ours beside the paper",
                  fig.ours_vs_paper_figure, f"{table_title}: test error, ours beside the paper", frame)
    for _, cells in frame.groupby("row_id", sort=True):
        cells = cells[cells["n"] > 0]
        if cells.empty:
            continue
        first = cells.iloc[0]
        setting = first["setting"] if grouped else ""
        parts = [key, first["data"] if grouped else "", first["row"], setting]
        title = f"{table_title}, {first['data'] + ' ' if grouped else ''}{first['row']}" + \
            (f" [{setting}]" if setting else "")
        g.attempt(key, figure_name(f"{split}-error", *parts), f"{split.capitalize()} error vs epoch: {title}",
                  fig.test_error_figure, title, cells, split=split)
        g.attempt(key, figure_name("learning-curves", *parts), f"Learning curves: {title}",
                  fig.learning_figure, title, cells, split=split)
        for cell in cells[cells["method"] != "bp"].itertuples(index=False):   # BP's angle to itself is 0
            # a shortened cell's runs are not the table's protocol: the title says how they were cut
            short = f" [{cell.setting}]" if cell.mark and not grouped else ""
            label = f"{title}, {method_label(cell.method)}{cell.mark}{short}"
            g.attempt(key, figure_name("alignment", *parts, cell.method), f"Alignment with BP: {label}",
                      fig.alignment_figure, label, cell.paths)
        if first["model"] == "fc240x100":
            g.attempt(key, figure_name("depth", *parts), f"Depth experiment, 100 hidden layers: {title}",
                      fig.depth_figure, f"Depth experiment, 100 hidden layers: {title}", cells)
        runs = _feature_runs(cells)
        if runs:
            g.attempt(key, figure_name("tsne", *parts), f"t-SNE of hidden features: {title}", tsne_figure,
                      title, runs, points=g.tsne_points, progress=g.progress, cache=g.out / ".cache")


def write_figures(views, out: Path, tsne_points: int = 1000, progress=None) -> Gallery:
    """Every figure the records allow, each drawn on its own; see the module doc."""
    g = Gallery(out, tsne_points, progress)
    out.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(STYLE):
        for view in views:
            draw_view(g, view)
    return g
