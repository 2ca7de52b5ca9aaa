"""Every rule under one protocol: the eleven rules dfa-run trains, side by side on three nets.

The nets are Table 1's 2x800 and 7x240 tanh (MNIST) and Table 2's 3x1000 tanh (CIFAR-10), trained
under the paper's protocol on the author's summed step, the last epoch reported as in Tables 1–2.
A rule is the run's method, except DFA's two variants: binary feedback (``method.feedback=binary``)
and sparse feedback (``method.density=0.1``, one output error per hidden unit). Runs are read from
their records only (summary.json, metrics.jsonl); a run that departs from the protocol in anything
else (dfa-report's setting) is left out, so a cell holds exactly the protocol's seeds.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from .cells import t_interval
from .collect import collect, read_metrics
from .spec import METRICS, PROTOCOL_REDUCTION, SUMMARY
from .views import paired_text

# label → (method, DFA's feedback kind, density); the column order of the table
RULES = {"bp": ("bp", "uniform", 1.0), "fa": ("fa", "uniform", 1.0), "dfa": ("dfa", "uniform", 1.0),
         "ifa": ("ifa", "uniform", 1.0), "shallow": ("shallow", "uniform", 1.0), "drtp": ("drtp", "uniform", 1.0),
         "usf": ("usf", "uniform", 1.0), "brsf": ("brsf", "uniform", 1.0), "frsf": ("frsf", "uniform", 1.0),
         "dfa-binary": ("dfa", "binary", 1.0), "dfa-sparse": ("dfa", "uniform", 0.1)}
RULE_NAMES = {"bp": "BP", "fa": "FA", "dfa": "DFA", "ifa": "IFA", "shallow": "shallow", "drtp": "DRTP",
              "usf": "uSF", "brsf": "brSF", "frsf": "frSF", "dfa-binary": "DFA binary", "dfa-sparse": "sparse DFA"}
# (data, model, activation) → the net's name in the table; the row order
NETS = {("mnist", "fc800x2", "tanh"): "MNIST 2x800 tanh", ("mnist", "fc240x7", "tanh"): "MNIST 7x240 tanh",
        ("cifar10", "fc1000x3", "tanh"): "CIFAR-10 3x1000 tanh"}
STARTS = {"zero": "all layers at zero", "zero_above_first": "layers above the first at zero",
          "uniform": "U(±1/√fan_in)"}
RUN_COLUMNS = ["net", "rule", "seed", "test_error", "train_error", "init", "path"]
RULE_SETTINGS = ("method.feedback=", "method.density=")   # what makes a DFA variant a rule of its own


def rule_of(summary: dict) -> str | None:
    """The rule label of a run, or None for a variant the table does not hold."""
    key = (summary.get("method"), summary.get("feedback") or "uniform", float(summary.get("density") or 1.0))
    return next((label for label, rule in RULES.items() if rule == key), None)


def collect_rules(paths: list[Path]) -> pd.DataFrame:
    """The protocol runs under ``paths`` that fill a (net, rule) cell: one row per seed."""
    runs = collect([Path(p) for p in paths]).runs
    protocol = [not [part for part in setting.split(", ") if part and not part.startswith(RULE_SETTINGS)]
                for setting in runs["setting"]]   # (DFA's variants are settings of the DFA cell, rules here)
    keep = runs[pd.Series(protocol, index=runs.index, dtype=bool) & (runs["loss_reduction"] == PROTOCOL_REDUCTION)
                & (runs["split"] == "test") & (runs["variant"] == "none")]
    rows = []
    for run in keep.itertuples():
        net = NETS.get((run.data, run.model, run.activation))
        summary = json.loads((Path(run.path) / SUMMARY).read_text())
        rule = rule_of(summary)
        if net and rule:
            rows.append({"net": net, "rule": rule, "seed": run.seed, "test_error": run.test_error,
                         "train_error": run.train_error, "init": summary.get("init"), "path": run.path})
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return frame.sort_values(["net", "rule", "seed"]).drop_duplicates(["net", "rule", "seed"], keep="last")


def _cell(runs: pd.DataFrame) -> str:
    if not len(runs):
        return "—"
    errors, trains = list(runs["test_error"]), list(runs["train_error"])
    spread = f" ± {statistics.stdev(errors):.2f}" if len(errors) > 1 else ""
    return f"{statistics.fmean(errors):.2f}{spread} ({statistics.fmean(trains):.2f}) n={len(errors)}"


def table_markdown(runs: pd.DataFrame) -> str:
    """Nets × rules: mean ± sample std of the last epoch's test error % over seeds, the mean online
    training error in parentheses, n; then which start each rule trained from."""
    lines = [f"| Net | {' | '.join(RULE_NAMES[r] for r in RULES)} |", "|---|" + "---|" * len(RULES)]
    for net in NETS.values():
        here = runs[runs["net"] == net]
        lines.append(f"| {net} | {' | '.join(_cell(here[here['rule'] == r]) for r in RULES)} |")
    starts = {}
    for rule in RULES:
        inits = sorted(set(runs.loc[runs["rule"] == rule, "init"].dropna()))
        if inits:
            starts.setdefault(", ".join(STARTS.get(i, i) for i in inits), []).append(RULE_NAMES[rule])
    notes = ["- Test error % at the last epoch: mean ± sample std (ddof=1) over seeds, mean online training "
             "error in parentheses, n = seeds. The paper's protocol as Tables 1–2 run it (RMSprop 1e-4, batch 64, "
             "BCE, the author's summed step, early stop at 0.01 %, at most 300 epochs), feedback at the paper's "
             "scale (`method.feedback_scale=paper`; `source` is each later rule's own code's scale, "
             "docs/later-rules.md)."]
    if starts:
        notes.append("- Starts (`init=paper`, recorded in each summary.json): " + "; ".join(
            f"{', '.join(rules)}: {start}" for start, rules in starts.items()) + ". The sign rules, IFA and "
            "shallow cannot start from zero: sign(0) = 0 feeds nothing back, IFA's error reaches the layers "
            "above the first only through their weights, and shallow's hidden layers never learn.")
    return "\n".join(lines + [""] + notes)


def _paired_cell(diffs: list[float]) -> str:
    """As Tables 1–2's paired view writes a cell (``views.paired_text``)."""
    mean, low, high = t_interval(diffs)
    return paired_text(SimpleNamespace(n_pairs=len(diffs), setting="", mark="", mean_diff=mean, ci_low=low,
                                       ci_high=high), digits=2)


def paired_markdown(runs: pd.DataFrame) -> str:
    """Nets × rules: each rule's test error − BP's over the seeds both ran on the net (a seed is the
    same data order for every rule), the mean and its 95 % t-interval, as Tables 1–2 give them."""
    others = [r for r in RULES if r != "bp"]
    lines = [f"| Net | {' | '.join(f'{RULE_NAMES[r]} − BP' for r in others)} |", "|---|" + "---|" * len(others)]
    for net in NETS.values():
        here = runs[runs["net"] == net]
        bp = {seed: error for seed, error in zip(here.loc[here["rule"] == "bp", "seed"],
                                                 here.loc[here["rule"] == "bp", "test_error"]) if error == error}
        cells = []
        for rule in others:
            mine = here[here["rule"] == rule]
            cells.append(_paired_cell([error - bp[seed] for seed, error in zip(mine["seed"], mine["test_error"])
                                       if seed in bp and error == error]))
        lines.append(f"| {net} | {' | '.join(cells)} |")
    note = ("- Rule − BP, test error % at the last epoch, over the seeds both ran (diverged runs left out): mean, "
            "95 % t-interval (n − 1 degrees of freedom), n = matched seeds; 'higher' / 'lower': the interval "
            "excludes 0. One pair gives no interval.")
    return "\n".join(lines + ["", note])


def last_alignment(path: Path) -> list[float | None] | None:
    """The angle between the rule's δa and BP's, per hidden layer, at a run's last epoch (None: not
    measured; a layer's None: no update to measure, as under shallow)."""
    rows, _ = read_metrics(Path(path) / METRICS)
    angles = rows[-1].get("alignment") if rows else None
    return None if not angles else angles.get("delta_angle")


def draw_errors(runs: pd.DataFrame, out: Path) -> Path:
    """Per net, the rules ordered by mean test error, each seed a dot and the mean a bar."""
    from . import plots
    nets = [n for n in NETS.values() if (runs["net"] == n).any()]
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = plots.new_figure(3.3 * max(1, len(nets)), 3.4, ncols=max(1, len(nets)))
        for ax, net in zip(axes[0], nets):
            here = runs[runs["net"] == net]
            order = here.groupby("rule")["test_error"].mean().sort_values().index.tolist()
            for y, rule in enumerate(order):
                errors, shade = here.loc[here["rule"] == rule, "test_error"], plots.colour(RULES[rule][0])
                ax.plot([errors.mean()] * 2, [y - 0.3, y + 0.3], color=shade, lw=2)
                ax.scatter(errors, [y] * len(errors), s=12, color=shade, zorder=3)
            ax.set_yticks(range(len(order)), [RULE_NAMES[r] for r in order])
            ax.invert_yaxis()
            plots.log_axis(ax, "x")
            ax.set_title(net)
            ax.set_xlabel("test error % (last epoch)")
        return plots.save(fig, out)


def draw_alignment(runs: pd.DataFrame, out: Path, net: str = "MNIST 2x800 tanh") -> Path | None:
    """Seed 0 of each rule on ``net``: per hidden layer, the angle between the rule's update (δa) and
    the true gradient's at the last epoch. None when no run of the net measured it."""
    from . import plots
    seed0 = runs[(runs["net"] == net) & (runs["seed"] == 0)]
    measured = sorted(((r.rule, last_alignment(r.path)) for r in seed0.itertuples()), key=lambda m: list(RULES).index(m[0]))
    measured = [(rule, angles) for rule, angles in measured if angles is not None]
    if not measured:
        return None
    layers = max(len(a) for _, a in measured)
    width = 0.8 / layers
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = plots.new_figure(6.5, 3.0)
        ax = axes[0][0]
        for x, (rule, angles) in enumerate(measured):
            for i, angle in enumerate(angles):
                at = x - 0.4 + width * (i + 0.5)
                if angle is None or angle < 1:   # a bar too low to see says so: BP's 0°, shallow's no update
                    ax.text(at, 1.5, "none" if angle is None else f"{angle:.0f}°", ha="center", va="bottom",
                            fontsize=7, rotation=90, color="#444444")
                if angle is not None:
                    ax.bar(at, angle, width * 0.9, color=plots.colour(RULES[rule][0]),
                           alpha=0.45 + 0.55 * i / max(1, layers - 1))
        ax.axhline(90, color="#666666", lw=0.8, ls="--")
        ax.set_xticks(range(len(measured)), [RULE_NAMES[r] for r, _ in measured], rotation=30)
        ax.set_ylabel("angle to the gradient (°)")
        ax.set_ylim(0, 100)
        ax.set_title(plots.wrap(f"{net}, seed 0, last epoch: each hidden layer's update (δa) against the true "
                                f"gradient's (bars: layer 1 … {layers}, lighter to darker; none: no update)", 6.5))
        return plots.save(fig, out)
