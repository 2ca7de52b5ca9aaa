"""Runs → cells and statistics: which runs fill which paper cell, mean ± std over seeds, the
comparison with the paper, and paired differences against BP over matched seeds.
"""
from __future__ import annotations

import math

import pandas as pd

from .spec import METHODS, PAPER_METHODS, ROW_KEY, TABLES, FLAG_FLOOR, shortened_mark

CELL_COLUMNS = ["table", "row", *ROW_KEY, "setting", "method", "metric", "n", "n_diverged", "seeds",
                "ours_mean", "ours_std", "ours_train_error", "paper_mean", "paper_std", "paper_train_error",
                "delta", "flagged", "shortened", "mark", "source", "checked_against"]
HIDDEN_COLUMNS = ["row_id", "paths", "paper_text"]   # for views and figures, not for the CSV
PAIRED_COLUMNS = ["table", "row", "row_id", "method", "baseline", "setting", "mark", "n_pairs", "seeds",
                  "mean_diff", "ci_low", "ci_high"]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def method_order(methods) -> list[str]:
    """The paper's columns first (BP, FA, DFA), then the other known methods, in one fixed order."""
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(set(methods), key=lambda m: (order.get(m, len(order)), m))


# ---- which runs count where ------------------------------------------------------------------
def drop_superseded(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """A seed recorded twice for the same cell, setting and split (a rerun) counts once: the latest."""
    key = [*ROW_KEY, "method", "setting", "split", "seed"]
    latest = runs.sort_values(["finished_at", "path"]).drop_duplicates(subset=key, keep="last")
    return latest.sort_index(), len(runs) - len(latest)


def place_runs(runs: pd.DataFrame, paper_rows: set, strict: bool) -> pd.DataFrame:
    """Mark each run ``paper`` (it fills its paper cell), ``validation`` or ``other``.

    A paper cell takes its protocol runs; failing those (unless ``strict``), the shortened setting
    with the most runs. Validation runs never fill a paper cell.
    """
    runs = runs.copy()
    runs["place"] = "other"
    runs.loc[runs["split"] == "validation", "place"] = "validation"
    in_paper_row = pd.Series([tuple(k) in paper_rows for k in runs[ROW_KEY].itertuples(index=False)],
                             index=runs.index, dtype=bool)
    eligible = runs[in_paper_row & ~runs["changed"] & (runs["place"] == "other")]
    if strict:
        eligible = eligible[eligible["setting"] == ""]
    for _, cell in eligible.groupby([*ROW_KEY, "method"]):
        counts = cell["setting"].value_counts()
        chosen = "" if "" in counts else min(counts.index, key=lambda s: (-counts[s], s))
        runs.loc[cell.index[cell["setting"] == chosen], "place"] = "paper"
    return runs


# ---- statistics ------------------------------------------------------------------------------
def seed_stats(runs: pd.DataFrame, metric: str) -> dict:
    """Mean and sample std (ddof=1) over seeds; diverged runs are counted but not averaged."""
    diverged = runs["stop_reason"].eq("diverged")
    finished = runs[~diverged]
    return {"n": len(runs), "n_diverged": int(diverged.sum()),
            "ours_mean": finished[metric].mean(), "ours_std": finished[metric].std(ddof=1),
            "ours_train_error": finished["train_error"].mean(),
            "seeds": " ".join(map(str, sorted(int(s) for s in runs["seed"]))), "paths": list(runs["path"])}


def is_flagged(mean, std, paper_mean, paper_std) -> bool:
    """|ours − paper| > 2 × max(paper std, our std, 0.05); a NaN std (one seed) counts as 0."""
    if not (_finite(mean) and _finite(paper_mean)):
        return False
    tolerance = 2 * max(paper_std if _finite(paper_std) else 0.0, std if _finite(std) else 0.0, FLAG_FLOOR)
    return abs(mean - paper_mean) > tolerance + 1e-9  # at the boundary: not "further than"


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its ``level`` t-interval (n − 1 degrees of freedom)."""
    from scipy.stats import t
    n = len(diffs)
    mean = sum(diffs) / n if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired(placed: pd.DataFrame, cells: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per row of a table: each method − BP over the seeds both ran (same setting, neither diverged).
    Rows where BP or every other method has no runs are left out."""
    rows = []
    for row_id, row in cells.groupby("row_id", sort=True):
        first = row.iloc[0]
        in_row = placed[(placed[ROW_KEY] == first[ROW_KEY]).all(axis=1)]
        base = in_row[in_row["method"] == "bp"]
        if base.empty or in_row["method"].eq("bp").all():
            continue
        for method in [m for m in row["method"] if m != "bp"]:
            other = in_row[in_row["method"] == method]
            entry = {"table": first["table"], "row": first["row"], "row_id": row_id, "method": method,
                     "baseline": "bp", "setting": "", "mark": "", "n_pairs": 0, "seeds": "",
                     "mean_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan}
            if len(base) and len(other):
                settings = set(base["setting"]) | set(other["setting"])
                entry["setting"] = " | ".join(sorted(s or "paper protocol" for s in settings))
                if len(settings) == 1:
                    # a shortened setting keeps the table's mark for it: these are not protocol pairs
                    entry["mark"] = "".join(row.loc[row["method"] == method, "mark"])
                    both = base.merge(other, on="seed", suffixes=("_b", "_m"))
                    both = both[both[f"{metric}_b"].notna() & both[f"{metric}_m"].notna()].sort_values("seed")
                    diffs = list(both[f"{metric}_m"] - both[f"{metric}_b"])
                    mean, low, high = t_interval(diffs)
                    entry.update(n_pairs=len(diffs), seeds=" ".join(map(str, both["seed"])),
                                 mean_diff=mean, ci_low=low, ci_high=high)
            rows.append(entry)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


# ---- cells -------------------------------------------------------------------------------------
def paper_cells(data: str, runs: pd.DataFrame, paper: pd.DataFrame, metric: str,
                methods: list[str]) -> pd.DataFrame:
    """One table of the paper: every paper row × ``methods``, ours beside the paper's."""
    refs = {tuple(r[k] for k in [*ROW_KEY, "method"]): r for r in paper.to_dict("records")}
    cells = []
    rows = paper[paper["data"] == data].drop_duplicates(subset=ROW_KEY).to_dict("records")
    by_cell = {key: group for key, group in runs.groupby([*ROW_KEY, "method"])}
    empty = runs.iloc[0:0]
    for row_id, row in enumerate(rows):
        key = tuple(row[k] for k in ROW_KEY)
        for method in methods:
            ours = by_cell.get((*key, method), empty)
            ref = refs.get((*key, method), {})
            paper_text = ""
            if ref:
                paper_text = f"{ref['test_error_text']} ± {ref['test_std_text']}" + (
                    f" ({ref['train_error_text']})" if ref["train_error_text"] else "")
            cell = {"table": TABLES[data][0], "row": row["row"], "row_id": row_id,
                    **dict(zip(ROW_KEY, key)), "method": method,
                    "setting": ours["setting"].iloc[0] if len(ours) else "", "metric": metric,
                    **seed_stats(ours, metric),
                    "paper_mean": ref.get("test_error", math.nan), "paper_std": ref.get("test_std", math.nan),
                    "paper_train_error": ref.get("train_error", math.nan), "paper_text": paper_text,
                    "source": row["source"], "checked_against": ref.get("checked_against", "")}
            cell["delta"] = cell["ours_mean"] - cell["paper_mean"]
            cell["shortened"] = bool(len(ours)) and cell["setting"] != ""
            # a shortened cell is not the paper's protocol: it is marked, never flagged
            cell["flagged"] = not cell["shortened"] and is_flagged(cell["ours_mean"], cell["ours_std"],
                                                                   cell["paper_mean"], cell["paper_std"])
            cells.append(cell)
    frame = pd.DataFrame(cells, columns=CELL_COLUMNS + HIDDEN_COLUMNS)
    return assign_marks(frame)


def assign_marks(cells: pd.DataFrame) -> pd.DataFrame:
    """One footnote mark per distinct shortened setting of a table (†, ‡, § …), in row order."""
    settings = list(dict.fromkeys(cells.loc[cells["shortened"], "setting"]))
    marks = {s: shortened_mark(i) for i, s in enumerate(settings)}
    cells["mark"] = [marks[s] if short else "" for s, short in zip(cells["setting"], cells["shortened"])]
    return cells


def row_label(model: str, activation: str, variant: str) -> str:
    """``fc800x2``, ``relu``, ``dropout`` → ``2x800 ReLU + dropout`` (the paper's way). A model of
    your own is named by its target (``mypkg.nets:ResMLP(width=256)``), its activations its own."""
    import re
    if ":" in model:
        return model + (f" + {variant}" if variant not in ("none", "") else "")
    match = re.fullmatch(r"fc(\d+)x(\d+)", model)
    name = f"{match[2]}x{match[1]}" if match else model.upper() if model == "conv" else model
    act = {"relu": "ReLU"}.get(activation, activation)
    return f"{name} {act}" + (f" + {variant}" if variant not in ("none", "") else "")


def grouped_cells(runs: pd.DataFrame, metric: str, table: str) -> pd.DataFrame:
    """Runs that fill no paper cell (``other_runs``) or validation runs, one row per
    (data, model, activation, variant, setting)."""
    cells = []
    for row_id, (key, group) in enumerate(runs.groupby([*ROW_KEY, "setting"], sort=True)):
        data, model, activation, variant, setting = key
        for method, ours in group.groupby("method"):
            cells.append({"table": table, "row": row_label(model, activation, variant), "row_id": row_id,
                          "data": data, "model": model, "activation": activation, "variant": variant,
                          "setting": setting, "method": method, "metric": metric, **seed_stats(ours, metric),
                          "flagged": False, "shortened": bool(setting) and not ours["changed"].any(),
                          "mark": "", "checked_against": "", "paper_text": ""})
    return pd.DataFrame(cells, columns=CELL_COLUMNS + HIDDEN_COLUMNS)


def table_methods(present, selected) -> list[str]:
    """A paper table's columns: BP, FA, DFA always (unless filtered), and any other method that ran."""
    methods = set(PAPER_METHODS) | set(present) | set(selected or ())
    return [m for m in method_order(methods) if selected is None or m in selected]
