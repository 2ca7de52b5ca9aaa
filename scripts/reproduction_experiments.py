"""The runs around and beyond the paper's tables, for scripts/reproduction.py: the figure runs
(t-SNE maps, alignment angles), Table 2 as the batch-mean step left it, Table 1's four-cell
measurement on the author's summed step, and every rule under one protocol."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]   # the package, and the sibling reproduction_tables

from dfa_cli.report.build import Options, build_report, table_markdown  # noqa: E402
from dfa_cli.report.collect import collect  # noqa: E402
from dfa_cli.report.plateau import plateau_markdown  # noqa: E402
from dfa_cli.report import rules as every_rule  # noqa: E402
from dfa_cli.campaign.plans import RULE_NETS, SUMMED_STEP_CELLS  # noqa: E402
from dfa_cli.campaign.searches import SEARCHES  # noqa: E402
from dfa_cli.report.spec import TABLES  # noqa: E402
from reproduction_tables import (TABLE1, Table, cells_frame, link, noise, of_kind, progress, row_name,  # noqa: E402
                                 search_table, summaries)

FIGURE_RUNS = "mnist-figures"   # the t-SNE and alignment runs (dfa_cli.campaign.plans.figure_jobs)
# the experiments behind the ⚑ cells (dfa_cli.campaign.plans.experiment_jobs): their alignment runs' figures
# are kept under this prefix, for docs/differences.md
EXPERIMENT_RUNS, EXPERIMENT_PREFIX = ("mnist-experiments", "cifar10-experiments"), "experiments_"
# Table 2 as it stood on the batch-mean step: kept, and reported as its own experiment
FULL_SIZE_LAST_BATCH = "full-size-last-batch"
TABLE2_FULL_SIZE = Table("cifar10", 2, "#table-2-on-a-cpu", reduction="mean", under=FULL_SIZE_LAST_BATCH)
FULL_SIZE_PREFIX = "full-size-last-batch_"   # its figures' names under docs/reproduction/
SUMMED_STEP = "mnist-summed-step"   # Table 1's four-cell measurement (dfa_cli.campaign.plans.summed_step_jobs)
# the every-rule table's records: its own, and the cells Table 1's measurement and Table 2 run for it
RULE_FOLDERS = ("rules", SUMMED_STEP, "cifar10")
BIOTORCH = ("jsalbert/biotorch", "74fad0dd32529e754e4bba8298d4e0fd0a06a886")   # Benchmarks.md, LeNet on MNIST
BIOTORCH_LENET_MNIST = {"BP": 0.91, "FA": 1.7, "uSF": 0.94, "brSF": 0.91, "frSF": 0.97, "DFA": 1.61}


def full_size_block(records: Path, figure_files: list[Path], page: Path) -> str:
    """docs/differences.md's: Table 2 as the batch-mean step left it, kept as its own experiment."""
    table = TABLE2_FULL_SIZE
    frame = cells_frame(records, table)
    parts = [f"Records: `results/paper/{table.folder}/` and `results/paper/{FULL_SIZE_LAST_BATCH}/cifar10-validation/` "
             "(`dfa-report results/paper/full-size-last-batch --loss-reduction mean` makes this table).", "",
             progress(records, table), "",
             table_markdown([records / table.folder], table.data, parts=("cells",), loss_reduction=table.reduction), "",
             noise(records, table), ""]
    for f in of_kind(figure_files, f"{FULL_SIZE_PREFIX}ours-vs-paper_table{table.number}"):
        parts += [f"![Table {table.number} on the batch-mean step, ours beside the paper]({link(f, page)})", ""]
    curves = of_kind(figure_files, f"{FULL_SIZE_PREFIX}learning-curves_table{table.number}")
    if curves:
        parts += ["Learning curves per row: " + " · ".join(
            f"[{f.stem.split('_')[-1]}]({link(f, page)})" for f in curves), ""]
    parts.append(plateau_markdown(frame[~frame["shortened"] & (frame["n"] > 0)], "Its runs"))
    for name in (table.search, "cifar10-fa-dropout-search"):
        method = SEARCHES[name].method.upper()
        search = search_table(table.searches_in(records), name, f"#### The batch-mean step's dropout search ({method})")
        parts += ["", search] if search else []
    return "\n".join(parts)


def summed_step_block(records: Path, figure_files: list[Path], page: Path) -> str:
    """docs/differences.md's: Table 1's four cells on the author's summed step beside the committed
    (batch-mean) cells, and whether the committed table stands."""
    committed = cells_frame(records, TABLE1)
    report = build_report(collect([records / SUMMED_STEP]), Options(tables=["mnist"], loss_reduction="sum")) \
        if (records / SUMMED_STEP).is_dir() else None
    summed = next(v.frame for v in report.views if v.key == TABLES["mnist"][0]) if report else None
    lines = ["| Cell | committed (batch-mean step) | the author's summed step | difference | tolerance | within |",
             "|---|---|---|---|---|---|"]
    verdicts = []
    for row, method in SUMMED_STEP_CELLS:
        name = row_name(row)
        old = committed[(committed["row"] == name) & (committed["method"] == method)].iloc[0]
        new = None if summed is None else summed[(summed["row"] == name) & (summed["method"] == method)]
        new = None if new is None or not len(new) or not new.iloc[0]["n"] else new.iloc[0]
        shown_old = f"{old.ours_mean:.2f} ± {old.ours_std:.2f} (n={int(old.n)})"
        if new is None:
            lines.append(f"| {name}, {method.upper()} | {shown_old} | not run yet | | | |")
            verdicts.append(None)
            continue
        n = int(new.n)
        diff, tolerance = new.ours_mean - old.ours_mean, max(2 * old.ours_std, 0.05)
        within = bool(abs(diff) <= tolerance)   # (a numpy bool is never `is True`)
        verdicts.append(within if n >= 3 else None)
        shown_new = f"{new.ours_mean:.2f}" + ("" if n < 2 else f" ± {new.ours_std:.2f}") + f" (n={n})"
        lines.append(f"| {name}, {method.upper()} | {shown_old} | {shown_new} | {diff:+.2f} | {tolerance:.2f} | "
                     f"{'yes' if within else 'no'}{'' if n >= 3 else ' (so far)'} |")
    if all(v is True for v in verdicts):
        verdict = "Every cell is within its tolerance on three seeds: the committed Table 1 stands."
    elif any(v is False for v in verdicts):
        verdict = "A cell on three seeds is outside its tolerance: Table 1 reruns in full on the author's step, after Table 2."
    else:
        verdict = "The decision waits until each of the four cells has three seeds."
    return "\n".join([f"Records: `results/paper/{SUMMED_STEP}/` (`python scripts/reproduce.py summed-step`). Test "
                      "error % at the last epoch, mean ± sample std over seeds; tolerance: max(2 × the committed "
                      "cell's std, 0.05) points.", "", *lines, "", verdict])

def figures_block(records: Path, figure_files: list[Path], page: Path) -> str:
    """The front page's: the figure runs' t-SNE maps and alignment angles."""
    runs = summaries(records / FIGURE_RUNS)
    if not runs:
        return "The runs behind these figures have not finished yet (`python scripts/reproduce.py figures`)."
    listed = ", ".join(f"{s['method'].upper()} {s['model']} {s['test_error']:.2f} % after {s['epochs']} epochs "
                       f"({s['stop_reason']})" for s in runs)
    parts = [f"Runs (MNIST, the paper's protocol, seed 0; `results/paper/{FIGURE_RUNS}/`, "
             f"`python scripts/reproduce.py figures`): {listed}.", ""]
    for f in of_kind(figure_files, "tsne_") + of_kind(figure_files, "alignment_"):
        parts += [f"![{f.stem}]({link(f, page)})", ""]
    return "\n".join(parts)

def rules_block(records: Path, figure_files: list[Path], page: Path) -> str:
    """The front page's every-rule table: the eleven rules on three nets, on the author's step."""
    runs = every_rule.collect_rules([records / f for f in RULE_FOLDERS if (records / f).is_dir()])
    cells = runs.groupby(["net", "rule"]).size()
    planned = {name: len(RULE_NETS["_".join(key)][1]) for key, name in every_rule.NETS.items()}   # seeds per cell
    complete = sum(int(n >= planned[net]) for (net, _), n in cells.items())
    parts = [f"The campaign's `rules` plan (`python scripts/reproduce.py rules`; records `results/paper/rules/`, with "
             f"2x800 DFA and 7x240 BP from Table 1's measurement and CIFAR-10's BP, FA and DFA from Table 2): "
             f"{len(cells)} of its {len(every_rule.NETS) * len(every_rule.RULES)} cells have a record "
             f"({len(runs)} runs), {complete} all the seeds the plan gives them "
             f"({', '.join(f'{n} per {net} cell' for net, n in planned.items())}).", "", every_rule.table_markdown(runs), "",
             "Each rule against BP on the same net and seeds:", "", every_rule.paired_markdown(runs), ""]
    for f in of_kind(figure_files, "rules_errors") + of_kind(figure_files, "rules_alignment"):   # the table's first
        parts += [f"![{f.stem}]({link(f, page)})", ""]
    shown = ", ".join(f"{k} {v}" for k, v in BIOTORCH_LENET_MNIST.items())
    parts.append(f"Context, not a comparison: BioTorch's benchmark ([{BIOTORCH[0]}](https://github.com/{BIOTORCH[0]}) "
                 f"at {BIOTORCH[1][:7]}, Benchmarks.md) trains six of these rules on a LeNet for MNIST with SGD "
                 f"(momentum 0.9, weight decay 1e-3, 100 epochs, LR steps) and reports the best validation "
                 f"epoch's error %: {shown}. Another net and another protocol, with a chosen epoch.")
    return "\n".join(parts)
