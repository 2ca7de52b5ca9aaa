"""Cells → views: each table as rows of display strings with its footnotes, ready for any format.

Our numbers are shown with ``--digits`` decimals; the paper's always as the paper prints them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from .cells import rows_of
from .spec import FLAG, FLAG_FLOOR, METRIC_NAMES, NONE, TABLES, method_label


@dataclass
class View:
    key: str                              # file stem: table1_mnist, other_runs, incomplete_runs …
    title: str
    groups: list[tuple[str, list[str]]]   # column groups: (group title, sub-columns)
    rows: list[list[str]]                 # one string per sub-column, in order
    footnotes: list[str]
    frame: pd.DataFrame                   # the tidy table behind it (CSV, figures)
    figures: list = field(default_factory=list)   # (path relative to report.md, caption), drawn later


def _by_row(frame: pd.DataFrame) -> list[list]:
    """``frame.groupby("row_id", sort=True)``, each group as its itertuples, from one pass over the frame
    (itertuples costs per call, not per row)."""
    groups = {}
    for c in frame.itertuples(index=False):
        groups.setdefault(c.row_id, []).append(c)
    return [groups[row_id] for row_id in sorted(groups)]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value, digits: int, sign: bool = False) -> str:
    value = round(value, digits) + 0.0   # + 0.0 turns a rounded -0.0 into 0.0: no "-0.00"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def ours_text(c, digits: int) -> str:
    """``1.74 ± 0.08 (0.02) n=5``: mean ± std (training error), runs, then the cell's mark."""
    if c.n == 0:
        return NONE
    diverged = f", {c.n_diverged} diverged" if c.n_diverged else ""
    if not _finite(c.ours_mean):
        return f"{NONE} n={c.n}{diverged}{c.mark}"
    text = _fmt(c.ours_mean, digits)
    if _finite(c.ours_std):
        text += f" ± {_fmt(c.ours_std, digits)}"
    if _finite(c.ours_train_error):
        text += f" ({_fmt(c.ours_train_error, digits)})"
    return f"{text} n={c.n}{diverged}{c.mark}"


def paper_text(c) -> str:
    return c.paper_text or NONE


def delta_text(c, digits: int) -> str:
    """Δ with its flag; none for a shortened cell, whose number is not the paper's protocol."""
    if not _finite(c.delta) or c.shortened:
        return NONE
    return _fmt(c.delta, digits, sign=True) + (f" {FLAG}" if c.flagged else "")


def add_display_columns(cells: pd.DataFrame, digits: int) -> pd.DataFrame:
    """The rounded strings the tables show, beside the raw numbers (for the CSV)."""
    cells = cells.copy()
    rows = list(cells.itertuples(index=False))
    cells["ours_display"] = [ours_text(c, digits) for c in rows]
    cells["paper_display"] = [c.paper_text or "" for c in rows]
    cells["delta_display"] = ["" if d == NONE else d for d in (delta_text(c, digits) for c in rows)]
    return cells


def legend(metric: str) -> str:
    return (f"{METRIC_NAMES[metric].capitalize()}: mean ± sample std (ddof=1) over seeds, mean training "
            f"error in parentheses (last epoch, measured during the training pass), n = runs (seeds). "
            f"Diverged runs count in n but not in mean ± std.")


def shortened_notes(cells: pd.DataFrame) -> list[str]:
    """One footnote per mark, saying which setting it is."""
    notes = []
    marked = cells[cells["mark"] != ""]
    for mark, group in marked.groupby("mark", sort=False):
        which = ", ".join(f"{method_label(c.method)} {c.row}" for c in group.itertuples())
        notes.append(f"{mark} shortened runs, not the paper's protocol: {group['setting'].iloc[0]} "
                     f"({which}). Not comparable with the paper's numbers: no Δ, never flagged.")
    return notes


def paper_view(data: str, cells: pd.DataFrame, metric: str, digits: int, protocol_note: str = "") -> View:
    methods = list(dict.fromkeys(cells["method"]))
    rows = []
    for row in _by_row(cells):
        by_method = {c.method: c for c in row}
        line = [row[0].row]
        for m in methods:
            c = by_method[m]
            line += [ours_text(c, digits), paper_text(c), delta_text(c, digits)]
        rows.append(line)
    key, title = TABLES[data]
    checked = [f"{method_label(c.method)} {c.row} ({c.checked_against})"
               for c in cells[cells["checked_against"] != ""].itertuples()]
    provenance = f"checked: {', '.join(checked)}; the rest transcribed" if checked else "transcribed"
    notes = [legend(metric),
             f"Paper: {cells['source'].iloc[0]} ({provenance}), at its own precision. Δ = ours − paper; "
             f"{FLAG} when |Δ| > 2 × max(paper std, our std, {FLAG_FLOOR})."]
    if protocol_note:
        notes.append(protocol_note)
    if ((cells["variant"].str.contains("adversarial")) & (cells["n"] > 0)).any():
        notes.append("Adversarial row: the training error in parentheses is measured, as in the author's "
                     "code, on the FGSM-perturbed batches the network trains on (eps 0.08); runs with "
                     "trainer.eval_train=true also record a clean pass over the training set "
                     "(train_error_eval in metrics.jsonl and summary.json).")
    notes += shortened_notes(cells)
    return View(key, f"{title}: {METRIC_NAMES[metric]}, ours vs Nøkland (2016)",
                [("", ["Model"])] + [(method_label(m), ["ours", "paper", "Δ"]) for m in methods],
                rows, notes, add_display_columns(cells, digits))


def paired_text(p, digits: int) -> str:
    if p.n_pairs == 0:
        return f"{NONE} (settings differ)" if " | " in p.setting else NONE
    text = f"{_fmt(p.mean_diff, digits, sign=True)}"
    if _finite(p.ci_low):
        text += f" [{_fmt(p.ci_low, digits, sign=True)}, {_fmt(p.ci_high, digits, sign=True)}]"
        if p.ci_low > 0 or p.ci_high < 0:
            text += " higher" if p.ci_low > 0 else " lower"
    return f"{text} n={p.n_pairs}{p.mark}"


def paired_view(data: str, pairs: pd.DataFrame, metric: str, digits: int) -> View:
    methods = list(dict.fromkeys(pairs["method"]))
    rows = []
    for row in _by_row(pairs):
        by_method = {p.method: p for p in row}
        rows.append([row[0].row] + [paired_text(by_method[m], digits) for m in methods])
    key, title = TABLES[data]
    notes = [f"Paired difference of the {METRIC_NAMES[metric]} (method − BP) over the seeds both methods "
             f"ran in the same setting (diverged runs left out): mean, 95 % t-interval (n − 1 degrees "
             f"of freedom), n = matched seeds. 'higher' / 'lower': the interval excludes 0, the method's "
             f"error is higher / lower than BP's. One pair gives no interval."]
    if (pairs["mark"] != "").any():
        notes.append("† ‡ …: pairs of shortened runs, marked as in the table above; not the paper's protocol.")
    return View(f"{key}_paired", f"{title}: paired differences vs BP over matched seeds",
                [("", ["Model"])] + [("", [f"{method_label(m)} − BP"]) for m in methods], rows, notes, pairs)


def grouped_view(key: str, title: str, cells: pd.DataFrame, metric: str, digits: int, note: str) -> View:
    """Other runs and validation runs: one row per (row, setting), one column per method."""
    from .cells import method_order
    methods = method_order(cells["method"])
    rows = []
    for row in _by_row(cells):
        by_method = {c.method: c for c in row}
        first = row[0]
        rows.append([first.data, first.row, first.setting or "paper protocol"] +
                    [ours_text(by_method[m], digits) if m in by_method else NONE for m in methods])
    return View(key, title, [("", ["Data", "Model", "Setting"])] + [(method_label(m), ["ours"]) for m in methods],
                rows, [legend(metric), note], add_display_columns(cells, digits))


def problems_view(problems: pd.DataFrame) -> View:
    frame = problems[["run", "reason", "counted"]]
    counted = int(frame["counted"].sum())
    rows = [[r.run, r.reason, "yes" if r.counted else "no"] for r in frame.itertuples(index=False)]
    notes = ["A run is in the tables once its summary.json is written and every field in it has the right "
             "type. 'In tables: yes' — the run counts (its summary is sound) but its metrics.jsonl is "
             "short, so its curves stop early."]
    return View("incomplete_runs", f"Runs left out or read in part ({len(frame) - counted} left out, "
                f"{counted} read in part)", [("", ["Run", "Reason", "In tables"])], rows, notes, frame)


def runs_view(runs: pd.DataFrame, digits: int) -> View:
    """The records behind every cell, so that any cell can be audited."""
    columns = ["table", "row", "method", "setting", "seed", "test_error", "train_error", "epochs",
               "stop_reason", "git_commit", "path"]
    frame = runs[columns].sort_values(["table", "row", "method", "setting", "seed"])

    def num(v):
        return _fmt(v, digits) if _finite(v) else NONE
    rows = [[table, row, method_label(method), setting or "paper protocol", str(seed), num(test_error),
             num(train_error), str(epochs if epochs is not None else NONE), str(stop_reason or NONE),
             (git_commit or NONE)[:12], path]
            for table, row, method, setting, seed, test_error, train_error, epochs, stop_reason, git_commit, path
            in rows_of(frame, columns)]
    notes = ["Test error (validation error for validation runs) and online training error % at the last "
             "epoch; commit: the dfa-cli commit that ran (first 12 characters; -dirty: local changes)."]
    headers = ["Table", "Model", "Method", "Setting", "Seed", "Error", "Train", "Epochs", "Stop", "Commit", "Path"]
    return View("runs", f"Runs behind each cell ({len(frame)})", [("", headers)], rows, notes, frame)


def failures_view(failures: list[tuple[str, str]]) -> View:
    frame = pd.DataFrame(failures, columns=["figure", "reason"])
    return View("figures_failed", f"Figures not drawn ({len(frame)})", [("", ["Figure", "Reason"])],
                [list(f) for f in failures], ["Every other figure was drawn; dfa-report exits with status 3."],
                frame)
