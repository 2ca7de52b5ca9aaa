"""``dfa-report``: Nøkland (2016)'s Tables 1–3 from run records, our numbers beside the paper's.

Reads only files — ``summary.json``, ``metrics.jsonl`` and ``.hydra/config.yaml`` of every run
directory under the given paths — and never imports torch or the training code. pandas, rich and
matplotlib are imported once the arguments parse, so ``--help`` stays instant.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# The record contract (dfa_cli.records, which imports torch, so not imported here).
SUMMARY, METRICS, HYDRA_DIR = "summary.json", "metrics.jsonl", ".hydra"
SEED_DIR = re.compile(r"seed\d+")

METHODS = ("bp", "fa", "dfa", "ifa")
PAPER_METHODS = ("bp", "fa", "dfa")
TABLES = {  # data set → (file stem, title)
    "mnist": ("table1_mnist", "Table 1 — MNIST"),
    "cifar10": ("table2_cifar10", "Table 2 — CIFAR-10"),
    "cifar100": ("table3_cifar100", "Table 3 — CIFAR-100"),
}
TABLE_ALIASES = {"1": "mnist", "table1": "mnist", "2": "cifar10", "table2": "cifar10",
                 "3": "cifar100", "table3": "cifar100"}
METRIC_NAMES = {"test_error": "test error % at the last epoch",
                "best_test_error": "best test error % over the epochs"}
FORMATS = ("rich", "markdown", "csv", "latex")

FLAG, SHORTENED, NONE = "⚑", "†", "—"
FLAG_FLOOR = 0.05  # percent: a smaller difference is never flagged, whatever the stds say

# The paper's protocol (DESIGN §2); a run that departs from it is not a paper cell.
PROTOCOL_EPOCHS = 300
PROTOCOL_STOP = 0.01
PROTOCOL = {"optimizer": ("optim", "rmsprop"), "loss": ("loss", "bce"), "batch_size": ("trainer.batch_size", 64),
            "matmul_precision": ("trainer.matmul_precision", "highest")}  # summary key → (override, value)
PROTOCOL_LR = {("cifar10", "conv"): 5e-5, ("cifar100", "conv"): 2.5e-5}
DEFAULT_LR = 1e-4
PAPER_DROPOUT = {"dropout": (0.1, 0.5)}  # input, hidden; every other variant has none
PAPER_ADVERSARIAL = {"eps": 0.08, "clip": False}  # FGSM of the "+ adversarial" row (DESIGN §2)
FULL_TEST_SET = {"mnist": 10_000, "cifar10": 10_000, "cifar100": 10_000}

ROW_KEY = ["data", "model", "activation", "variant"]
CELL_COLUMNS = ["table", "row", *ROW_KEY, "setting", "method", "metric", "n", "n_diverged", "seeds",
                "ours_mean", "ours_std", "ours_train_error", "paper_mean", "paper_std", "paper_train_error",
                "delta", "flagged", "shortened", "source", "checked_against"]
HIDDEN_COLUMNS = ["row_id", "paths"]  # kept for figures, left out of the CSV


class ReportError(Exception):
    """Bad input: one sentence for the user, no traceback."""


class Unreadable(Exception):
    """A run directory whose record cannot be used; the message says why."""


# ---- reading records ------------------------------------------------------------------------
def _is_record_dir(path: Path) -> bool:
    return (path / SUMMARY).is_file() or (path / METRICS).is_file() or (path / HYDRA_DIR).is_dir()


def walk_runs(root: Path):
    """Yield ``(directory, has summary.json)`` for every run directory under ``root`` (itself included).

    A stacked-seed job keeps its records in ``seed<N>/`` subfolders: it is a container, not a run.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        has_hydra = HYDRA_DIR in dirnames
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if SUMMARY in filenames:
            yield here, True
        elif METRICS in filenames or has_hydra:
            if not any(SEED_DIR.fullmatch(d) and _is_record_dir(here / d) for d in dirnames):
                yield here, False


def read_metrics(path: Path) -> list[dict]:
    """The epochs of a ``metrics.jsonl``; a partial line (a killed run's last) is skipped."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except OSError:
        return []
    return rows


def read_config(directory: Path) -> dict:
    """``.hydra/config.yaml`` as a dict; ``{}`` when absent or unreadable (it only adds detail)."""
    import yaml
    try:
        config = yaml.safe_load((directory / HYDRA_DIR / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _get(config: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(config, dict):
            return None
        config = config.get(key)
    return config


def _number(value) -> float:
    """A finite float, or NaN for null, NaN, infinities and anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _implied_hidden(model: str) -> list[int] | None:
    """``fc800x2`` → ``[800, 800]``; None for names that do not say."""
    match = re.fullmatch(r"fc(\d+)x(\d+)", model)
    return [int(match[1])] * int(match[2]) if match else None


def departures(summary: dict, config: dict) -> tuple[list[str], list[str]]:
    """How a run departs from the paper's protocol, written as dfa-run overrides: (shortcuts, changes).

    Shortcuts (fewer training or test examples, fewer epochs) make a quick version of a paper cell;
    changes (optimizer, learning rate, …) make a different experiment.
    """
    s, shortcuts, changes = summary, [], []
    if s.get("subset") is not None:
        shortcuts.append(f"data.subset={s['subset']}")
    full, n_test = FULL_TEST_SET.get(s["data"]), s.get("n_test")
    if full and isinstance(n_test, int) and n_test < full:
        shortcuts.append(f"data.test_subset={n_test}")
    max_epochs = s.get("max_epochs")
    if isinstance(max_epochs, int) and max_epochs != PROTOCOL_EPOCHS:
        (shortcuts if max_epochs < PROTOCOL_EPOCHS else changes).append(f"trainer.max_epochs={max_epochs}")
    for key, (override, expected) in PROTOCOL.items():
        if s.get(key) not in (None, expected):
            changes.append(f"{override}={s[key]}")
    lr, expected_lr = s.get("lr"), PROTOCOL_LR.get((s["data"], s["model"]), DEFAULT_LR)
    if _finite(lr) and not math.isclose(lr, expected_lr, rel_tol=1e-6):
        changes.append(f"optim.lr={lr:g}")
    if _get(config, "init.name") not in (None, "paper"):
        changes.append(f"init={_get(config, 'init.name')}")
    stop = _get(config, "trainer.stop_train_error")
    if _finite(stop) and not math.isclose(stop, PROTOCOL_STOP):
        changes.append(f"trainer.stop_train_error={stop:g}")
    parts = str(s.get("variant") or "none").split("+")  # e.g. dropout+adversarial
    rates = PAPER_DROPOUT["dropout"] if "dropout" in parts else (0.0, 0.0)
    for key, expected in zip(("input", "hidden"), rates):
        rate = _get(config, f"dropout.{key}")
        if _finite(rate) and not math.isclose(rate, expected, abs_tol=1e-9):
            changes.append(f"dropout.{key}={rate:g}")
    if "adversarial" in parts:
        eps = s.get("adversarial_eps", _get(config, "adversarial.eps"))
        if _finite(eps) and not math.isclose(eps, PAPER_ADVERSARIAL["eps"], rel_tol=1e-9):
            changes.append(f"adversarial.eps={eps:g}")
        if s.get("adversarial_clip", _get(config, "adversarial.clip")) is True:
            changes.append("adversarial.clip=true")
    implied, hidden = _implied_hidden(s["model"]), s.get("hidden")
    if implied and isinstance(hidden, list) and hidden != implied:
        changes.append(f"model.hidden=[{','.join(map(str, hidden))}]")
    return shortcuts, changes


def read_run(directory: Path) -> dict:
    """One finished run: what it is (row, method, setting) and its results."""
    try:
        summary = json.loads((directory / SUMMARY).read_text())
    except OSError as err:
        raise Unreadable(f"cannot read summary.json ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise Unreadable(f"summary.json is not valid JSON ({err})") from None
    if not isinstance(summary, dict):
        raise Unreadable("summary.json is not a JSON object")
    missing = [k for k in ("data", "model", "method") if not isinstance(summary.get(k), str)]
    if missing:
        raise Unreadable(f"summary.json lacks {', '.join(missing)}")
    config = read_config(directory)
    if not summary.get("variant"):  # records older than the variant field
        summary["variant"] = "dropout" if summary.get("dropout") not in (None, "none") else "none"
    shortcuts, changes = departures(summary, config)
    seed = summary.get("seed")
    return {
        "path": str(directory), "data": summary["data"], "model": summary["model"],
        "activation": summary.get("activation") or _get(config, "model.activation") or "?",
        "variant": summary["variant"], "method": summary["method"],
        "seed": seed if isinstance(seed, int) else None,
        "test_error": _number(summary.get("test_error")),
        "best_test_error": _number(summary.get("best_test_error")),
        "train_error": _number(summary.get("train_error")),
        "stop_reason": summary.get("stop_reason"), "finished_at": str(summary.get("finished_at") or ""),
        "setting": ", ".join(shortcuts + changes), "changed": bool(changes),
    }


def _problem(directory: Path, reason: str) -> dict:
    config = read_config(directory)
    return {"run": str(directory), "reason": reason,
            "data": _get(config, "data.name"), "method": _get(config, "method.name")}


def _incomplete_reason(directory: Path) -> str:
    epochs = len(read_metrics(directory / METRICS))
    if epochs:
        return f"no summary.json: still running, or stopped after {epochs} logged epoch(s)"
    return "no summary.json and no logged epoch: still starting, or it failed before training"


def collect(paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every run under ``paths`` → (runs, problems) as DataFrames."""
    import pandas as pd
    runs, problems, seen = [], [], set()
    for root in paths:
        for directory, has_summary in walk_runs(root):
            if directory.resolve() in seen:
                continue
            seen.add(directory.resolve())
            if not has_summary:
                problems.append(_problem(directory, _incomplete_reason(directory)))
                continue
            try:
                runs.append(read_run(directory))
            except Unreadable as err:
                problems.append(_problem(directory, str(err)))
    run_columns = ["path", *ROW_KEY, "method", "seed", "test_error", "best_test_error", "train_error",
                   "stop_reason", "finished_at", "setting", "changed"]
    return (pd.DataFrame(runs, columns=run_columns).astype({"changed": bool}),
            pd.DataFrame(problems, columns=["run", "reason", "data", "method"]))


def load_paper() -> pd.DataFrame:
    """The paper's reference values (``paper_tables.csv`` in the package), in the paper's row order."""
    import pandas as pd
    with resources.files("dfa_cli").joinpath("paper_tables.csv").open(encoding="utf-8") as f:
        paper = pd.read_csv(f, comment="#", dtype={"table": int})
    paper["checked_against"] = paper["checked_against"].fillna("")
    return paper


# ---- aggregating ----------------------------------------------------------------------------
def drop_superseded(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """A seed recorded twice for the same cell and setting (a rerun) counts once: the latest record."""
    key = [*ROW_KEY, "method", "setting", "seed"]
    ordered = runs.sort_values(["finished_at", "path"])
    seeded = ordered[ordered["seed"].notna()]
    latest = seeded.drop_duplicates(subset=key, keep="last")
    kept = ordered[ordered["seed"].isna() | ordered.index.isin(latest.index)]
    return kept.sort_index(), len(runs) - len(kept)


def place_runs(runs: pd.DataFrame, paper_rows: set, strict: bool) -> pd.DataFrame:
    """Mark each run ``paper`` (it fills its paper cell) or ``other``.

    A paper cell takes its protocol runs; failing those (unless ``strict``), the shortened setting
    with the most runs. Changed settings, non-paper rows and the remaining runs are ``other``.
    """
    import pandas as pd
    runs = runs.copy()
    in_paper_row = pd.MultiIndex.from_frame(runs[ROW_KEY]).isin(list(paper_rows))
    runs["place"] = "other"
    eligible = runs[in_paper_row & ~runs["changed"]]
    if strict:
        eligible = eligible[eligible["setting"] == ""]
    for _, cell in eligible.groupby([*ROW_KEY, "method"]):
        counts = cell["setting"].value_counts()
        chosen = "" if "" in counts else min(counts.index, key=lambda s: (-counts[s], s))
        runs.loc[cell.index[cell["setting"] == chosen], "place"] = "paper"
    return runs


def seed_stats(runs: pd.DataFrame, metric: str) -> dict:
    """Mean and sample std (ddof=1) over seeds; diverged runs are counted but not averaged."""
    diverged = runs["stop_reason"].eq("diverged")
    finished = runs[~diverged]
    seeds = sorted(int(s) for s in runs["seed"].dropna())
    return {"n": len(runs), "n_diverged": int(diverged.sum()),
            "ours_mean": finished[metric].mean(), "ours_std": finished[metric].std(ddof=1),
            "ours_train_error": finished["train_error"].mean(),
            "seeds": " ".join(map(str, seeds)), "paths": list(runs["path"])}


def is_flagged(mean, std, paper_mean, paper_std) -> bool:
    """|ours − paper| > 2 × max(paper std, our std, 0.05); a NaN std (one seed) counts as 0."""
    if not (_finite(mean) and _finite(paper_mean)):
        return False
    tolerance = 2 * max(paper_std if _finite(paper_std) else 0.0, std if _finite(std) else 0.0, FLAG_FLOOR)
    return abs(mean - paper_mean) > tolerance + 1e-9  # at the boundary: not "further than"


def _methods(present, selected) -> list[str]:
    """Methods in the paper's column order, unknown ones after them."""
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted((m for m in present if selected is None or m in selected),
                  key=lambda m: (order.get(m, len(order)), m))


def paper_cells(data: str, runs: pd.DataFrame, paper: pd.DataFrame, metric: str,
                methods: list[str]) -> pd.DataFrame:
    """One table of the paper: every paper row × ``methods``, ours beside the paper's."""
    import pandas as pd
    refs = {tuple(r[k] for k in [*ROW_KEY, "method"]): r for r in paper.to_dict("records")}
    cells = []
    rows = paper[paper["data"] == data].drop_duplicates(subset=ROW_KEY).to_dict("records")
    for row_id, row in enumerate(rows):
        key = {k: row[k] for k in ROW_KEY}
        in_row = runs[(runs[ROW_KEY] == pd.Series(key)).all(axis=1)]
        for method in methods:
            ours = in_row[in_row["method"] == method]
            ref = refs.get((*key.values(), method), {})
            cell = {"table": TABLES[data][0], "row": row["row"], "row_id": row_id, **key, "method": method,
                    "setting": ours["setting"].iloc[0] if len(ours) else "", "metric": metric,
                    **seed_stats(ours, metric),
                    "paper_mean": ref.get("test_error", math.nan), "paper_std": ref.get("test_std", math.nan),
                    "paper_train_error": ref.get("train_error", math.nan), "source": row["source"],
                    "checked_against": ref.get("checked_against", "")}
            cell["delta"] = cell["ours_mean"] - cell["paper_mean"]
            cell["flagged"] = is_flagged(cell["ours_mean"], cell["ours_std"], cell["paper_mean"], cell["paper_std"])
            cell["shortened"] = bool(len(ours)) and cell["setting"] != ""
            cells.append(cell)
    return pd.DataFrame(cells, columns=CELL_COLUMNS + HIDDEN_COLUMNS)


def row_label(model: str, activation: str, variant: str) -> str:
    """``fc800x2``, ``relu``, ``dropout`` → ``2x800 ReLU + dropout`` (the paper's way)."""
    match = re.fullmatch(r"fc(\d+)x(\d+)", model)
    name = f"{match[2]}x{match[1]}" if match else model.upper() if model == "conv" else model
    act = {"relu": "ReLU"}.get(activation, activation)
    return f"{name} {act}" + (f" + {variant}" if variant not in ("none", "") else "")


def other_cells(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Runs that fill no paper cell, one row per (data, model, activation, variant, setting)."""
    import pandas as pd
    cells = []
    groups = runs.groupby([*ROW_KEY, "setting"], sort=True)
    for row_id, (key, group) in enumerate(groups):
        data, model, activation, variant, setting = key
        for method, ours in group.groupby("method"):
            cells.append({"table": "other_runs", "row": row_label(model, activation, variant),
                          "row_id": row_id, "data": data, "model": model, "activation": activation,
                          "variant": variant, "setting": setting, "method": method, "metric": metric,
                          **seed_stats(ours, metric), "flagged": False,  # not compared with the paper
                          "shortened": bool(setting) and not ours["changed"].any(), "checked_against": ""})
    return pd.DataFrame(cells, columns=CELL_COLUMNS + HIDDEN_COLUMNS)


# ---- views: one table, ready for any format -------------------------------------------------
@dataclass
class View:
    key: str                              # file stem: table1_mnist, other_runs, incomplete_runs
    title: str
    groups: list[tuple[str, list[str]]]   # column groups: (group title, sub-columns)
    rows: list[list[str]]                 # one string per sub-column, in order
    footnotes: list[str]
    frame: pd.DataFrame                   # the tidy table behind it (CSV, figures)


def _fmt(value, digits: int) -> str:
    return f"{value:.{digits}f}"


def ours_text(c, digits: int, dagger: bool = False) -> str:
    """``1.74 ± 0.08 (0.02) n=5``: mean ± std (training error), runs; † (if ``dagger``) when shortened."""
    if c.n == 0:
        return NONE
    diverged = f", {c.n_diverged} diverged" if c.n_diverged else ""
    mark = SHORTENED if dagger and c.shortened else ""
    if not _finite(c.ours_mean):
        return f"{NONE} n={c.n}{diverged}{mark}"
    text = _fmt(c.ours_mean, digits)
    if _finite(c.ours_std):
        text += f" ± {_fmt(c.ours_std, digits)}"
    if _finite(c.ours_train_error):
        text += f" ({_fmt(c.ours_train_error, digits)})"
    return f"{text} n={c.n}{diverged}{mark}"


def paper_text(c, digits: int) -> str:
    if not _finite(c.paper_mean):
        return NONE
    text = f"{_fmt(c.paper_mean, digits)} ± {_fmt(c.paper_std, digits)}"
    return text + (f" ({_fmt(c.paper_train_error, digits)})" if _finite(c.paper_train_error) else "")


def delta_text(c, digits: int) -> str:
    if not _finite(c.delta):
        return NONE
    return f"{c.delta:+.{digits}f}" + (f" {FLAG}" if c.flagged else "")


def _legend(metric: str) -> str:
    return (f"{METRIC_NAMES[metric].capitalize()}: mean ± sample std (ddof=1) over seeds, mean training "
            f"error in parentheses (last epoch, measured during the training pass), n = runs (seeds). "
            f"Diverged runs count in n but not in mean ± std.")


def paper_view(data: str, cells: pd.DataFrame, metric: str, digits: int) -> View:
    methods = list(dict.fromkeys(cells["method"]))
    rows = []
    for _, row in cells.groupby("row_id", sort=True):
        by_method = {c.method: c for c in row.itertuples(index=False)}
        line = [row["row"].iloc[0]]
        for m in methods:
            c = by_method[m]
            line += [ours_text(c, digits, dagger=True), paper_text(c, digits), delta_text(c, digits)]
        rows.append(line)
    key, title = TABLES[data]
    checked = [f"{c.method.upper()} {c.row} ({c.checked_against})"
               for c in cells[cells["checked_against"] != ""].itertuples()]
    provenance = f"checked: {', '.join(checked)}; the rest transcribed" if checked else "transcribed"
    notes = [_legend(metric),
             f"Paper: {cells['source'].iloc[0]} ({provenance}). Δ = ours − paper; {FLAG} when "
             f"|Δ| > 2 × max(paper std, our std, {FLAG_FLOOR})."]
    if ((cells["variant"].str.contains("adversarial")) & (cells["n"] > 0)).any():
        notes.append("Adversarial row: the training error in parentheses is measured, as in the author's "
                     "code, on the FGSM-perturbed batches the network trains on (eps 0.08); runs with "
                     "trainer.eval_train=true also record a clean pass over the training set "
                     "(train_error_eval in metrics.jsonl and summary.json).")
    shortened = cells[cells["shortened"]]
    for setting, group in shortened.groupby("setting"):
        notes.append(f"{SHORTENED} shortened runs, not the paper's protocol ({setting}; {len(group)} cell(s)): "
                     f"not comparable with the paper's numbers.")
    return View(key, f"{title}: {METRIC_NAMES[metric]}, ours vs Nøkland (2016)",
                [("", ["Model"])] + [(m.upper(), ["ours", "paper", "Δ"]) for m in methods],
                rows, notes, cells)


def other_view(cells: pd.DataFrame, metric: str, digits: int) -> View:
    methods = _methods(set(cells["method"]), None)
    rows = []
    for _, row in cells.groupby("row_id", sort=True):
        by_method = {c.method: c for c in row.itertuples(index=False)}
        first = row.iloc[0]
        rows.append([first["data"], first["row"], first["setting"] or "paper protocol"] +
                    [ours_text(by_method[m], digits) if m in by_method else NONE for m in methods])
    notes = [_legend(metric),
             "Runs that fill no paper cell: another model, activation or variant, a setting that departs "
             "from the paper's protocol (the setting column lists it as dfa-run overrides), or a "
             "shortened setting of a cell that already has runs."]
    return View("other_runs", f"Other runs: {METRIC_NAMES[metric]}",
                [("", ["Data", "Model", "Setting"])] + [(m.upper(), ["ours"]) for m in methods],
                rows, notes, cells)


def problems_view(problems: pd.DataFrame) -> View:
    frame = problems[["run", "reason"]]
    return View("incomplete_runs", f"Incomplete or unreadable runs ({len(frame)})", [("", ["Run", "Reason"])],
                [list(r) for r in frame.itertuples(index=False)],
                ["These runs are in no table: a run shows once its summary.json is written and readable."], frame)


@dataclass
class Report:
    views: list[View]
    notes: list[str]   # about the whole report (superseded records …)


def build_report(runs: pd.DataFrame, problems: pd.DataFrame, paper: pd.DataFrame,
                 args: argparse.Namespace) -> Report:
    runs, superseded = drop_superseded(runs)
    tables = args.table or None
    if tables:
        runs = runs[runs["data"].isin(tables)]
        problems = problems[problems["data"].isna() | problems["data"].isin(tables)]
    if args.method:
        runs = runs[runs["method"].isin(args.method)]
        problems = problems[problems["method"].isna() | problems["method"].isin(args.method)]
    paper_rows = set(paper[ROW_KEY].itertuples(index=False, name=None))
    runs = place_runs(runs, paper_rows, args.strict)
    placed = runs[runs["place"] == "paper"]
    views = []
    for data in TABLES:
        ours = placed[placed["data"] == data]
        if not (len(ours) or (tables and data in tables)):
            continue
        methods = _methods(set(PAPER_METHODS) | set(ours["method"]) | set(args.method or ()), args.method)
        cells = paper_cells(data, ours, paper, args.metric, methods)
        if args.hide_empty:
            filled = cells.groupby("row_id")["n"].transform("sum") > 0
            cells = cells[filled]
        if len(cells):
            views.append(paper_view(data, cells, args.metric, args.digits))
    others = runs[runs["place"] == "other"]
    if len(others):
        views.append(other_view(other_cells(others, args.metric), args.metric, args.digits))
    if len(problems):
        views.append(problems_view(problems))
    notes = []
    if superseded:
        notes.append(f"{superseded} earlier record(s) of a seed that was run again for the same cell and "
                     f"setting left out (the latest record counts).")
    return Report(views, notes)


# ---- formats --------------------------------------------------------------------------------
def _flat_headers(view: View) -> list[str]:
    return [sub if not group else group if sub == "ours" else f"{group} {sub}"
            for group, subs in view.groups for sub in subs]


def to_markdown(view: View) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    headers = _flat_headers(view)
    lines = [f"### {view.title}", "", line(headers), "|" + "|".join("---" for _ in headers) + "|"]
    lines += [line(r) for r in view.rows]
    lines += [""] + [f"- {note}" for note in view.footnotes]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                  "±": r"$\pm$", "Δ": r"$\Delta$", "×": r"$\times$", "−": r"$-$", "—": "---",
                  "<": r"$<$", ">": r"$>$", "|": r"$|$", FLAG: r"$^{\ast}$", SHORTENED: r"$^{\dagger}$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(view: View) -> str:
    n_columns = sum(len(subs) for _, subs in view.groups)
    lines = [f"% {view.title} — generated by dfa-report; needs \\usepackage{{booktabs}}",
             r"\begin{table}[ht]", r"\centering", f"\\caption{{{latex_escape(view.title)}}}",
             f"\\label{{tab:{view.key.replace('_', '-')}}}",
             f"\\begin{{tabular}}{{l{'c' * (n_columns - 1)}}}", r"\toprule"]
    if any(len(subs) > 1 and group for group, subs in view.groups):
        tops, rules, col = [], [], 1
        for group, subs in view.groups:
            if group and len(subs) > 1:
                tops.append(f"\\multicolumn{{{len(subs)}}}{{c}}{{{latex_escape(group)}}}")
                rules.append(f"\\cmidrule(lr){{{col}-{col + len(subs) - 1}}}")
            else:
                tops += [""] * len(subs)
            col += len(subs)
        lines += [" & ".join(tops) + r" \\", "".join(rules)]
        subheaders = [sub if not group or len(subs) > 1 else group for group, subs in view.groups for sub in subs]
    else:
        subheaders = _flat_headers(view)
    lines += [" & ".join(latex_escape(h) for h in subheaders) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in view.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [r"\par\smallskip\footnotesize " + latex_escape(note) for note in view.footnotes]
    lines += [r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(view: View) -> str:
    return view.frame.drop(columns=HIDDEN_COLUMNS, errors="ignore").to_csv(index=False)


_PREFIX = {"ours": "", "paper": "paper ", "Δ": "Δ "}


def rich_table(view: View):
    """A terminal table: a method's ours / paper / Δ stacked in one cell, so it fits a terminal."""
    from rich import box
    from rich.table import Table
    from rich.text import Text
    table = Table(title=view.title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  caption="\n".join(view.footnotes), caption_justify="left", show_lines=True)
    for group, subs in view.groups:
        for title in (subs if not group else [group]):
            table.add_column(title, overflow="fold")
    for row in view.rows:
        cells, values = [], iter(row)
        for group, subs in view.groups:
            if not group:
                cells += [Text(next(values)) for _ in subs]
                continue
            text = Text()
            for i, sub in enumerate(subs):
                value = next(values)
                if i and value == NONE:
                    continue  # a missing paper value or Δ says nothing
                style = "bold red" if FLAG in value else ("dim" if sub == "paper" else "")
                text.append(("\n" if i else "") + _PREFIX[sub] + value, style=style)
            cells.append(text)
        table.add_row(*cells)
    return table


def print_rich(report: Report, file=None, width: int | None = None) -> None:
    from rich.console import Console
    plain = file is not None
    console = Console(file=file, width=width, color_system=None if plain else "auto", highlight=False)
    for view in report.views:
        console.print(rich_table(view))
        console.print()
    for note in report.notes:
        console.print(note)


def to_text(report: Report) -> str:
    buffer = io.StringIO()
    print_rich(report, file=buffer, width=200)
    return buffer.getvalue()


def report_markdown(report: Report) -> str:
    return "\n".join([to_markdown(v) for v in report.views] + [f"{n}\n" for n in report.notes])


def report_csv(report: Report) -> str:
    """One tidy CSV of every cell (paper tables and other runs); incomplete runs go elsewhere."""
    import pandas as pd
    frames = [v.frame for v in report.views if v.key != "incomplete_runs"]
    if not frames:
        return ""
    return pd.concat(frames, ignore_index=True).drop(columns=HIDDEN_COLUMNS, errors="ignore").to_csv(index=False)


def report_latex(report: Report) -> str:
    return "\n".join([to_latex(v) for v in report.views] + [f"% {n}" for n in report.notes]) + "\n"


# ---- output folder --------------------------------------------------------------------------
def prepare_out(out: Path) -> Path:
    """Create ``out`` and check that it takes files, before any work is done."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".dfa-report-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ReportError(f"cannot write the report to {out}: {err.strerror or err}.") from None
    return out


def write_out(report: Report, out: Path, tsne_points: int = 1000) -> list[Path]:
    """Every table in every format, the whole report in Markdown, and the figures."""
    from .figures import write_figures
    written = []
    for view in report.views:
        single = Report([view], [])
        for ext, text in (("md", to_markdown(view)), ("csv", to_csv(view)), ("tex", to_latex(view)),
                          ("txt", to_text(single))):
            path = out / f"{view.key}.{ext}"
            path.write_text(text, encoding="utf-8")
            written.append(path)
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    written.append(out / "report.md")
    return written + write_figures(report, out / "figures", tsne_points=tsne_points)


# ---- command line ---------------------------------------------------------------------------
HELP = f"""\
Nøkland (2016)'s Tables 1–3 from dfa-run records, our numbers beside the paper's.

  dfa-report results/                               terminal tables
  dfa-report results/ --format markdown > tables.md
  dfa-report results/ --format csv --out report/    every table in every format + figures
  dfa-report results/ --table mnist --method dfa    filters

Each cell: test error % (--metric), mean ± sample std (ddof=1) over seeds, mean training error
in parentheses, n runs; then the paper's value and Δ = ours − paper. {FLAG} marks
|Δ| > 2 × max(paper std, our std, {FLAG_FLOOR}); diverged runs count in n, not in the mean.

Which runs fill a paper cell: those run with the paper's protocol (RMSprop lr 1e-4, batch 64,
BCE, paper init and dropout, the full data, max 300 epochs). A cell without such runs takes the
shortened runs (data.subset, data.test_subset or trainer.max_epochs < 300) with the most seeds,
marked {SHORTENED}; --strict keeps them out. Everything else — other models, other settings, the
rest of a cell's shortened runs — is listed under "other runs" with the overrides that set it
apart. A seed recorded twice for one cell counts once (the latest record). Run folders without
a readable summary.json are listed as incomplete or unreadable runs.
"""


def _choices(kind: str, valid, aliases=None):
    """An argparse type for ``a,b`` lists checked against ``valid``."""
    aliases = aliases or {}

    def parse(text: str) -> list[str]:
        items = [aliases.get(t.strip().lower(), t.strip().lower()) for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in valid]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {kind} {text!r}; choose from {', '.join(valid)}")
        return items
    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dfa-report", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="results folders or run folders, searched recursively")
    p.add_argument("--format", choices=FORMATS, default="rich",
                   help="what to print: rich terminal tables (default), markdown, csv (one tidy table "
                        "of every cell) or latex (booktabs)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="also write every table in every format (.md .csv .tex .txt), report.md and "
                        "figures (PNG: test-error curves, ours-vs-paper bars, learning curves, alignment "
                        "angles, the 100-layer depth experiment, t-SNE maps — each where its data exists) "
                        "to DIR/figures")
    p.add_argument("--table", type=_choices("table", tuple(TABLES), TABLE_ALIASES), action="extend",
                   metavar="DATA", help="only these tables: mnist, cifar10, cifar100 (or 1, 2, 3); "
                   "repeat or separate with commas; a chosen table is shown even without runs")
    p.add_argument("--method", type=_choices("method", METHODS), action="extend", metavar="METHOD",
                   help="only these methods: bp, fa, dfa, ifa; repeat or separate with commas")
    p.add_argument("--metric", choices=tuple(METRIC_NAMES), default="test_error",
                   help="test_error at the last epoch (default) or best_test_error (the best epoch's)")
    p.add_argument("--digits", type=int, default=2, choices=range(0, 5), metavar="N",
                   help="decimals in the tables (default 2)")
    p.add_argument("--strict", action="store_true",
                   help="paper tables take protocol runs only; shortened runs go to other runs")
    p.add_argument("--tsne-points", type=_positive, default=1000, metavar="N",
                   help="with --out: examples per t-SNE map of runs that saved features.npz "
                        "(diagnostics.features=true, experiment=tsne); default 1000")
    p.add_argument("--hide-empty", action="store_true",
                   help="leave out paper rows that have no runs of ours")
    return p.parse_args(argv)


def _check_paths(paths: list[Path]) -> None:
    for path in paths:
        if not path.exists():
            raise ReportError(f"{path} does not exist; give the results folder dfa-run wrote to.")
        if not path.is_dir():
            raise ReportError(f"{path} is not a folder; give a results folder or a run folder.")


def run(args: argparse.Namespace) -> None:
    _check_paths(args.paths)
    out = prepare_out(args.out) if args.out else None
    runs, problems = collect(args.paths)
    if runs.empty and problems.empty:
        where = ", ".join(str(p) for p in args.paths)
        raise ReportError(f"no run records under {where}: no folder there holds summary.json, "
                          f"metrics.jsonl or .hydra/.")
    report = build_report(runs, problems, load_paper(), args)
    if args.format == "rich":
        print_rich(report)
    else:
        render = {"markdown": report_markdown, "csv": report_csv, "latex": report_latex}[args.format]
        sys.stdout.write(render(report))
        if args.format == "csv" and len(problems):
            print(f"dfa-report: {len(problems)} incomplete or unreadable run(s) are not in the CSV; "
                  f"see them with --format rich or in --out.", file=sys.stderr)
    if out:
        written = write_out(report, out, tsne_points=args.tsne_points)
        print(f"dfa-report: wrote {len(written)} files to {out}", file=sys.stderr)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except ReportError as err:
        print(f"dfa-report: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
