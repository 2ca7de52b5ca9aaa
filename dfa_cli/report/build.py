"""The pipeline: record folders → runs (collect) → cells and statistics (cells) → views.

:func:`table_markdown` is the short way from record paths to one table as Markdown (the README's
and docs/reproduction.md's generated blocks are made with it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .cells import (drop_superseded, grouped_cells, paired, paper_cells, place_runs, row_label,
                    table_methods)
from .collect import Collected, collect
from .spec import METRIC_NAMES, PROTOCOL_REDUCTION, ROW_KEY, TABLES, load_paper, row_protocol
from .views import View, grouped_view, paired_view, paper_view, problems_view, runs_view


@dataclass
class Options:
    tables: list[str] | None = None     # data sets (mnist, cifar10, cifar100); None: every one with runs
    methods: list[str] | None = None
    metric: str = "test_error"          # or best_test_error
    digits: int = 2
    strict: bool = False                # paper cells take protocol runs only
    hide_empty: bool = False            # leave out paper rows without runs
    loss_reduction: str = PROTOCOL_REDUCTION   # the training step whose runs fill the paper cells


def mark_other_step(runs: pd.DataFrame, reduction: str) -> pd.DataFrame:
    """Runs trained on the other step (summary.json's ``loss_reduction``; records without it averaged)
    depart from the cells' protocol: ``loss.reduction=…`` joins their setting, so they fill no paper
    cell and never share a row of the other runs with the cells' own."""
    runs = runs.copy()
    other = runs["loss_reduction"] != reduction
    runs.loc[other, "setting"] = [", ".join(filter(None, [s, f"loss.reduction={r}"]))
                                  for s, r in zip(runs.loc[other, "setting"], runs.loc[other, "loss_reduction"])]
    runs.loc[other, "changed"] = True
    return runs


@dataclass
class Report:
    views: list[View]
    notes: list[str]                    # about the whole report (superseded records …)
    runs: View                          # the records behind each cell (--runs)
    failures: list = field(default_factory=list)   # figures not drawn: (name, reason)


def _protocol_note(cells: pd.DataFrame) -> str:
    """What the rows with their own protocol (the dropout row) were trained with."""
    notes = []
    for row in cells.drop_duplicates("row_id").itertuples():
        protocol = row_protocol(row.data, row.model, row.activation, row.variant)
        if protocol.source:
            extra = {"step": f" (halved every {protocol.lr_step_epochs} epochs)",
                     "auto": f" (halved when an epoch's training error ≥ its EMA, at most "
                             f"{protocol.lr_max_halvings} times)"}.get(protocol.lr_schedule, "")
            notes.append(f"{row.row}: LR schedule {protocol.lr_schedule}{extra}, up to {protocol.max_epochs} "
                         f"epochs, lr {protocol.lr:g}, as chosen on the validation split ({protocol.source}).")
        elif "dropout" in row.variant.split("+") and cells.loc[cells["row_id"] == row.row_id, "n"].sum():
            notes.append(f"{row.row}: a constant LR for up to 300 epochs, as every other row; the paper chose "
                         f"this row's LR decay and training time on a validation set, and its preset does "
                         f"not name that choice yet.")
    return " ".join(notes)


def _label_runs(runs: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Each run's table and row name, for the listing of the runs behind each cell."""
    names = {tuple(r[k] for k in ROW_KEY): r["row"] for r in paper.to_dict("records")}
    runs = runs.copy()
    keys = list(runs[ROW_KEY].itertuples(index=False, name=None))
    runs["row"] = [names.get(k) or row_label(*k[1:]) for k in keys]
    runs["table"] = [TABLES[d][0] if p == "paper" else f"{p}_runs" for d, p in zip(runs["data"], runs["place"])]
    return runs


def build_report(collected: Collected, options: Options, paper: pd.DataFrame | None = None) -> Report:
    paper = load_paper() if paper is None else paper
    runs, superseded = drop_superseded(mark_other_step(collected.runs, options.loss_reduction))
    problems = collected.problems
    if options.tables:
        runs = runs[runs["data"].isin(options.tables)]
        problems = problems[problems["data"].isna() | problems["data"].isin(options.tables)]
    if options.methods:
        runs = runs[runs["method"].isin(options.methods)]
        problems = problems[problems["method"].isna() | problems["method"].isin(options.methods)]
    paper_rows = set(paper[ROW_KEY].itertuples(index=False, name=None))
    runs = place_runs(runs, paper_rows, options.strict)
    placed, metric, digits = runs[runs["place"] == "paper"], options.metric, options.digits
    views = []
    for data in TABLES:
        ours = placed[placed["data"] == data]
        if not (len(ours) or (options.tables and data in options.tables)):
            continue
        cells = paper_cells(data, ours, paper, metric, table_methods(ours["method"], options.methods))
        if options.hide_empty:
            cells = cells[cells.groupby("row_id")["n"].transform("sum") > 0]
        if len(cells):
            views.append(paper_view(data, cells, metric, digits, _protocol_note(cells)))
            pairs = paired(ours, cells, metric)
            if len(pairs) and pairs["n_pairs"].sum():
                views.append(paired_view(data, pairs, metric, digits))
    others = runs[runs["place"] == "other"]
    if len(others):
        views.append(grouped_view(
            "other_runs", f"Other runs: {METRIC_NAMES[metric]}", grouped_cells(others, metric, "other_runs"),
            metric, digits, "Runs that fill no paper cell: another model, activation or variant, a setting that "
            "departs from the paper's protocol (the setting column lists it as dfa-run overrides; key=? means "
            "neither summary.json nor .hydra/ records it), or a shortened setting of a cell that already "
            "has runs."))
    validation = runs[runs["place"] == "validation"]
    if len(validation):
        views.append(grouped_view(
            "validation_runs", "Validation runs: validation error % (never in a paper cell)",
            grouped_cells(validation, metric, "validation_runs"), metric, digits,
            "Trained on the training set less its last examples (MNIST 50k, CIFAR 40k) and evaluated on "
            "those (data.split=validation): the numbers are validation errors, used to choose a setting "
            "(e.g. the dropout row's LR schedule), not test errors."))
    if len(problems):
        views.append(problems_view(problems))
    notes = []
    if superseded:
        notes.append(f"{superseded} earlier record(s) of a seed that was run again for the same cell and "
                     f"setting left out (the latest record counts).")
    return Report(views, notes, runs_view(_label_runs(runs, paper), digits))


def table_markdown(paths, table: str = "mnist", digits: int = 2, metric: str = "test_error",
                   parts: tuple[str, ...] = ("cells", "paired"), loss_reduction: str = PROTOCOL_REDUCTION) -> str:
    """One paper table as Markdown from the records under ``paths``: ours beside the paper, n per cell,
    the legend and footnotes (part ``cells``); the paired differences vs BP below it when there are
    matched seeds (part ``paired``). ``parts`` picks either or both, so the two can go to different pages."""
    from .render import to_markdown
    report = build_report(collect([Path(p) for p in paths]),
                          Options(tables=[table], digits=digits, metric=metric, loss_reduction=loss_reduction))
    key = TABLES[table][0]
    keys = [{"cells": key, "paired": f"{key}_paired"}[part] for part in parts]
    return "\n".join(to_markdown(v, heading="###") for k in keys for v in report.views if v.key == k)
