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


def rows_of(frame: pd.DataFrame, columns: list[str]):
    """The rows of ``frame[columns]`` as plain tuples, as itertuples gives them but without its cost per
    value (text columns iterate slowly in pandas)."""
    return zip(*(frame[c].to_numpy(dtype=object).tolist() for c in columns))


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
    in_paper_row = pd.Series([tuple(k) in paper_rows for k in rows_of(runs, ROW_KEY)], index=runs.index, dtype=bool)
    eligible = runs[in_paper_row & ~runs["changed"] & (runs["place"] == "other")]
    if strict:
        eligible = eligible[eligible["setting"] == ""]
    counts = {}   # cell → setting → runs
    cell_settings = [(tuple(cell), setting) for *cell, setting in rows_of(eligible, [*ROW_KEY, "method", "setting"])]
    for cell, setting in cell_settings:
        counts.setdefault(cell, {}).setdefault(setting, 0)
        counts[cell][setting] += 1
    chosen = {cell: "" if "" in n else min(n, key=lambda s: (-n[s], s)) for cell, n in counts.items()}
    runs.loc[eligible.index[[chosen[cell] == setting for cell, setting in cell_settings]], "place"] = "paper"
    return runs


# ---- statistics ------------------------------------------------------------------------------
STAT_COLUMNS = ["stop_reason", "train_error", "seed", "path"]   # what seed_stats reads, besides the metric


def seed_stats(runs: pd.DataFrame, metric: str) -> dict:
    """Mean and sample std (ddof=1) over seeds; diverged runs are counted but not averaged."""
    diverged = runs["stop_reason"].to_numpy(dtype=object) == "diverged"
    errors, train_errors = runs[metric][~diverged], runs["train_error"][~diverged]   # two columns, not the frame
    return {"n": len(runs), "n_diverged": int(diverged.sum()),
            "ours_mean": errors.mean(), "ours_std": errors.std(ddof=1), "ours_train_error": train_errors.mean(),
            "seeds": " ".join(map(str, sorted(int(s) for s in runs["seed"]))),
            "paths": runs["path"].to_numpy(dtype=object).tolist()}


def is_flagged(mean, std, paper_mean, paper_std) -> bool:
    """|ours − paper| > 2 × max(paper std, our std, 0.05); a NaN std (one seed) counts as 0."""
    if not (_finite(mean) and _finite(paper_mean)):
        return False
    tolerance = 2 * max(paper_std if _finite(paper_std) else 0.0, std if _finite(std) else 0.0, FLAG_FLOOR)
    return abs(mean - paper_mean) > tolerance + 1e-9  # at the boundary: not "further than"


# Student's t quantile of a 95 % interval, scipy.stats.t.ppf(0.975, df) for df = 1 … 100, to the last bit
# (a test checks each against scipy): the usual seed counts need no scipy, whose stats module alone takes
# longer to import than dfa-report takes to read 1,200 records.
T_975 = (12.706204736174694, 4.302652729749462, 3.1824463052837078, 2.7764451051977934, 2.5705818356363146,
         2.4469118511449786, 2.364624251592784, 2.306004135204166, 2.262157162798205, 2.228138851986274,
         2.200985160091639, 2.1788128296672284, 2.1603686564627913, 2.144786687917804, 2.131449545559776,
         2.1199052992212546, 2.1098155778333156, 2.1009220402410382, 2.0930240544083087, 2.085963447265864,
         2.0796138447276795, 2.0738730679040254, 2.0686576104190486, 2.0638985616280245, 2.0595385527532972,
         2.0555294386428735, 2.0518305164802846, 2.0484071417952454, 2.045229642132703, 2.0422724563012378,
         2.039513446396408, 2.0369333434601016, 2.0345152974493383, 2.0322445093177186, 2.030107928250343,
         2.0280940009804502, 2.0261924630291093, 2.0243941639119694, 2.022690920036761, 2.021075390306273,
         2.019540970441376, 2.0180817028184443, 2.016692199227824, 2.0153675744437636, 2.014103388880846,
         2.012895598919429, 2.0117405137297655, 2.010634757624232, 2.0095752371292392, 2.008559112100761,
         2.007583770315836, 2.006646805061688, 2.0057459953178687, 2.0048792881880564, 2.0040447832891455,
         2.003240718847872, 2.002465459291007, 2.0017174841452356, 2.000995378088267, 2.0002978220142604,
         1.999623584994939, 1.9989715170333788, 1.998340542520741, 1.997729654317693, 1.9971379083920038,
         1.9965644189523117, 1.996008354025296, 1.9954689314298435, 1.9949454151072374, 1.994437111771186,
         1.9939433678456255, 1.9934635666618719, 1.992997125889855, 1.992543495180932, 1.9921021540022417,
         1.9916726096446642, 1.9912543953883846, 1.9908470688116906, 1.9904502102301285, 1.990063421254446,
         1.9896863234569029, 1.989318557136572, 1.9889597801751624, 1.9886096669757083, 1.9882679074772216,
         1.98793420623902, 1.9876082815890708, 1.9872898648311692, 1.986978699506281, 1.9866745407037683,
         1.9863771544186177, 1.98608631695113, 1.9858018143458227, 1.985523441866604, 1.9852510035054978,
         1.984984311522457, 1.9847231860139845, 1.9844674545084815, 1.9842169515864174, 1.9839715185235518)


def t_quantile(q: float, df: int) -> float:
    """Student's t quantile: ``scipy.stats.t.ppf(q, df)``, from :data:`T_975` where it holds it."""
    if q == 0.975 and 1 <= df <= len(T_975):
        return T_975[df - 1]
    from scipy.special import stdtrit   # what t.ppf computes, without importing scipy.stats
    return float(stdtrit(df, q))


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its ``level`` t-interval (n − 1 degrees of freedom)."""
    n = len(diffs)
    mean = sum(diffs) / n if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired(placed: pd.DataFrame, cells: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per row of a table: each method − BP over the seeds both ran (same setting, neither diverged).
    Rows where BP or every other method has no runs are left out."""
    runs = {}   # (row key, method) → [(seed, setting, metric)], in the order of placed
    for *key, method, setting, seed, value in rows_of(placed, [*ROW_KEY, "method", "setting", "seed", metric]):
        runs.setdefault(tuple(key), {}).setdefault(method, []).append((seed, setting, value))
    by_row = {}
    for c in rows_of(cells, ["row_id", "table", "row", *ROW_KEY, "method", "mark"]):
        by_row.setdefault(c[0], []).append(c)
    rows = []
    for row_id in sorted(by_row):
        row = by_row[row_id]
        _, table, name, *key, _, _ = row[0]
        in_row = runs.get(tuple(key), {})
        base = in_row.get("bp", [])
        if not base or set(in_row) == {"bp"}:
            continue
        for method, mark in [(c[-2], c[-1]) for c in row if c[-2] != "bp"]:
            other = in_row.get(method, [])
            entry = {"table": table, "row": name, "row_id": row_id, "method": method,
                     "baseline": "bp", "setting": "", "mark": "", "n_pairs": 0, "seeds": "",
                     "mean_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan}
            if base and other:
                settings = {r[1] for r in base} | {r[1] for r in other}
                entry["setting"] = " | ".join(sorted(s or "paper protocol" for s in settings))
                if len(settings) == 1:
                    # a shortened setting keeps the table's mark for it: these are not protocol pairs
                    entry["mark"] = mark
                    # an inner join on the seed (base's order), both numbers known (not NaN), by seed
                    others = {}
                    for seed, _, value in other:
                        others.setdefault(seed, []).append(value)
                    both = sorted(((seed, b, m) for seed, _, b in base for m in others.get(seed, ())
                                   if b == b and m == m), key=lambda p: p[0])
                    diffs = [m - b for _, b, m in both]
                    mean, low, high = t_interval(diffs)
                    entry.update(n_pairs=len(diffs), seeds=" ".join(str(p[0]) for p in both),
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
    runs = runs[list(dict.fromkeys([*ROW_KEY, "method", "setting", *STAT_COLUMNS, metric]))]   # smaller groups
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
    runs = runs[list(dict.fromkeys([*ROW_KEY, "setting", "method", "changed", *STAT_COLUMNS, metric]))]
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
