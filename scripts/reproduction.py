"""Regenerate the reproduction blocks of the README and docs/reproduction.md from the committed
records in results/paper.

    python scripts/reproduction.py            # rewrites every block between its markers,
                                              # and the figures under docs/reproduction/
    python scripts/reproduction.py --check    # exit 1 if a block is not what the records give,
                                              # or a ⚑ cell has no paragraph in docs/differences.md
    python scripts/reproduction.py --flagged  # each ⚑ cell's runs, for its paragraph in docs/differences.md

Each block is one :class:`Block`: a name (its markers ``<!-- reproduction:start NAME … -->`` and
``<!-- reproduction:end NAME -->``), the page that holds it, and the function that writes its
Markdown. Per table (Table 1, MNIST; Table 2, CIFAR-10) the README's block holds how far the
campaign is (cells with a record, machine hours, the machines), the table as dfa-report makes it
(ours beside the paper, n per cell) and the ours-vs-paper figure; docs/reproduction.md's details
block the paired differences vs BP, the dropout row's validation search and the links to each
row's learning curves. The README's ``figures`` block shows the runs behind the paper's other
evidence (t-SNE maps, alignment angles). docs/differences.md's ``table2-plateau`` block gives every
CIFAR-10 run's plateau (mean of the last 50 epochs), lowest epoch and training error, which the ⚑
paragraphs discuss. Everything in a block comes from the records; the hand-written notes sit outside
the markers.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dfa_cli.report.build import Options, build_report, table_markdown  # noqa: E402
from dfa_cli.report.collect import collect  # noqa: E402
from dfa_cli.report.plateau import curve_facts, noise_markdown, plateau_markdown  # noqa: E402
from dfa_cli.report import rules as every_rule  # noqa: E402
from dfa_cli.campaign.runner import preset_sets  # noqa: E402
from dfa_cli.campaign.plans import PRESETS, RULE_NETS, SUMMED_STEP_CELLS  # noqa: E402
from dfa_cli.campaign.searches import DROPOUT_SEARCH, METHOD_DROPOUT_SEARCHES, SEARCHES  # noqa: E402
from dfa_cli.report.spec import TABLES  # noqa: E402

README = REPO / "README.md"
REPRODUCTION_PAGE = REPO / "docs" / "reproduction.md"
DIFFERENCES_PAGE = REPO / "docs" / "differences.md"
RECORDS = REPO / "results" / "paper"
FIGURES = REPO / "docs" / "reproduction"
FIGURE_RUNS = "mnist-figures"   # the t-SNE and alignment runs (dfa_cli.campaign.plans.figure_jobs)
# the experiments behind the ⚑ cells (dfa_cli.campaign.plans.experiment_jobs): their alignment runs' figures
# are kept under this prefix, for docs/differences.md
EXPERIMENT_RUNS, EXPERIMENT_PREFIX = ("mnist-experiments", "cifar10-experiments"), "experiments_"


class Table(NamedTuple):
    data: str          # dfa-report's --table, and the records' folder under results/paper by default
    number: int        # the paper's table
    anchor: str        # where docs/reproduction.md says how the campaign runs it
    reduction: str = "sum"   # the training step whose records fill its cells (dfa-report --loss-reduction)
    under: str = ""    # a folder under results/paper that holds the table's records and searches

    @property
    def folder(self) -> str:
        """The records' folder under results/paper."""
        return f"{self.under}/{self.data}" if self.under else self.data

    def searches_in(self, records: Path) -> Path:
        """Where its validation searches' folders (``<data>-validation/…``) lie."""
        return records / self.under if self.under else records

    @property
    def search(self) -> str:
        """Its dropout row's validation search (dfa_cli.campaign.searches.SEARCHES), whose choice the row runs."""
        return DROPOUT_SEARCH[f"table{self.number}"]

    @property
    def method_searches(self) -> tuple[str, ...]:
        """The same row's searches for the other methods (FA's, BP's)."""
        return METHOD_DROPOUT_SEARCHES[f"table{self.number}"]


# Table 1's records trained on the batch mean (every batch, the last partial one too, a full-size
# step); the four-cell measurement on the author's summed step (SUMMED_STEP) decides whether it reruns.
TABLE1 = Table("mnist", 1, "#reproducing-the-tables-on-a-cpu", reduction="mean")
TABLE2 = Table("cifar10", 2, "#table-2-on-a-cpu")
TABLES_SHOWN = (TABLE1, TABLE2)
# Table 2 as it stood on the batch-mean step: kept, and reported as its own experiment
FULL_SIZE_LAST_BATCH = "full-size-last-batch"
TABLE2_FULL_SIZE = Table("cifar10", 2, "#table-2-on-a-cpu", reduction="mean", under=FULL_SIZE_LAST_BATCH)
FULL_SIZE_PREFIX = "full-size-last-batch_"   # its figures' names under docs/reproduction/
SUMMED_STEP = "mnist-summed-step"   # Table 1's four-cell measurement (dfa_cli.campaign.plans.summed_step_jobs)
# the every-rule table's records: its own, and the cells Table 1's measurement and Table 2 run for it
RULE_FOLDERS = ("rules", SUMMED_STEP, "cifar10")
BIOTORCH = ("jsalbert/biotorch", "74fad0dd32529e754e4bba8298d4e0fd0a06a886")   # Benchmarks.md, LeNet on MNIST
BIOTORCH_LENET_MNIST = {"BP": 0.91, "FA": 1.7, "uSF": 0.94, "brSF": 0.91, "frSF": 0.97, "DFA": 1.61}
STEP_NAMES = {"sum": "the author's summed step (the error summed over each batch, so an epoch's last, "
                     "partial batch steps short)",
              "mean": "the batch-mean step (every batch, the epoch's last, partial one too, a full-size step)"}


def start_marker(name: str) -> str:
    return f"<!-- reproduction:start {name}: generated by scripts/reproduction.py from results/paper; do not edit -->"


def end_marker(name: str) -> str:
    return f"<!-- reproduction:end {name} -->"


def summaries(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))]


def cells_frame(records: Path, table: Table):
    report = build_report(collect([records / table.folder]),
                          Options(tables=[table.data], loss_reduction=table.reduction))
    return next(v.frame for v in report.views if v.key == TABLES[table.data][0])


def progress(records: Path, table: Table) -> str:
    """How far the table is: its paper cells with a full-protocol record and their seeds, the
    shortened ones (marked in the table), the machine hours and the machines."""
    frame = cells_frame(records, table)
    cells = frame[frame["paper_mean"].notna() & (frame["n"] > 0)]
    full, short = cells[~cells["shortened"]], cells[cells["shortened"]]
    by_n = Counter(int(n) for n in full["n"])
    per_cell = ", ".join(f"{n} in {count} cell{'s' * (count > 1)}" for n, count in sorted(by_n.items(), reverse=True))
    records_of = summaries(records / table.folder)
    search = summaries(table.searches_in(records) / f"{table.data}-validation")
    everything = records_of + search
    hours = sum(s.get("wall_seconds") or 0 for s in everything) / 3600
    machines = sorted({f"{s.get('device_name', '?')} ({s.get('device', '?')}, {s.get('threads', '?')} thread(s))"
                       for s in everything})
    dates = sorted(s.get("finished_at", "")[:10] for s in everything if s.get("finished_at"))
    span = ("—" if not dates else f"on {dates[0]}" if dates[0] == dates[-1] else f"between {dates[0]} and {dates[-1]}")
    shortened = (f"; {len(short)} more with shortened runs only, marked in the table" if len(short) else "")
    n_paper = int(frame["paper_mean"].notna().sum())
    return (f"**{len(full)} of Table {table.number}'s {n_paper} paper cells** have a full-protocol record "
            f"on {STEP_NAMES[table.reduction]} "
            f"(seeds per cell: {per_cell or '—'}){shortened}; {len(records_of)} table records and "
            f"{len(search)} validation-search records, {hours:.1f} machine hours in all, finished {span}; "
            f"machine: {'; '.join(machines) or '—'}.")


def search_table(records: Path, name: str, heading: str) -> str:
    search = SEARCHES[name]
    rows = search.summary(records)
    if not any(r["state"] != "not finished" for r in rows):
        return ""
    size = {"mnist": "MNIST's first 50k", "cifar10": "CIFAR-10's first 40k"}[search.data]
    lines = [heading, "", f"{search.method.upper()}, {_row_name(search.row)}, seed 0, trained on {size}, evaluated on the last 10k "
             f"(`python scripts/reproduce.py {name} --summary`):", "",
             "| candidate | overrides | state | epochs | final val. error % | best "
             f"{search.window}-epoch mean val. error % (ending at epoch) | final online train error % |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        extra = " ".join(search.candidates[r["candidate"]]) or "(constant LR)"
        if r["state"] == "not finished":
            lines.append(f"| {r['candidate']} | `{extra}` | not finished | | | | |")
            continue
        lines.append(f"| {r['candidate']} | `{extra}` | {r['state']}{' (' + r['stop'] + ')' if r['stop'] else ''} | "
                     f"{r['epochs']} | {r['final_val_error']:.2f} | {r['best_window_val_error']:.2f} "
                     f"({r['best_window_end_epoch']}) | {r['final_train_error']:.2f} |")
    choice = search.choice(rows)
    if choice is None:
        verdict = "The choice waits until every candidate has finished."
    else:
        settings = " ".join(f"{k}={v}" for k, v in choice["settings"].items())
        chosen = (f"Chosen, by the lowest best {search.window}-epoch mean validation error: **{choice['candidate']}**, "
                  f"trained for {choice['best_window_end_epoch']} epochs (where that window ends)")
        if name in DROPOUT_SEARCH.values():
            named = preset_sets(PRESETS / search.table / f"{search.row}.yaml", "trainer.lr_schedule")
            verdict = f"{chosen}; the row's preset {'sets' if named else 'is to set (not yet done)'} `{settings}`."
        else:
            verdict = f"{chosen}: {_against_row_choice(records, search, choice)}."
    return "\n".join(lines) + f"\n\n{verdict} (Row: `experiment={search.table}/{search.row}`.)"


def _against_row_choice(records: Path, search, choice: dict) -> str:
    """Another method's search's choice (FA's, BP's) set against the one its row runs, its first search's (DFA's):
    the same LR and schedule or not, training time aside."""
    first = SEARCHES[DROPOUT_SEARCH[search.table]]
    row = first.choice(first.summary(records))
    if row is None:
        return f"the row's own search ({first.method.upper()}) has not chosen yet"
    schedules = [{k: v for k, v in c["settings"].items() if k != "trainer.max_epochs"} for c in (choice, row)]
    same = schedules[0] == schedules[1]
    return (f"{'the same' if same else 'not the same'} LR and schedule as the row's choice "
            f"({first.method.upper()}'s **{row['candidate']}**), which its {search.method.upper()} cell runs")


def _row_name(preset: str) -> str:
    """``fc800x2_tanh_dropout`` → ``2x800 tanh + dropout``."""
    model, activation, *variant = preset.split("_")
    width, depth = model[2:].split("x")
    return f"{depth}x{width} {activation}" + "".join(f" + {v}" for v in variant)


DIFFER = "## The flagged cells"   # the heading in docs/differences.md the paragraphs sit under


def flagged_cells(records: Path, table: Table = TABLE1) -> list[dict]:
    """A table's ⚑ cells: row, method, ours vs the paper, and the records behind each. Their
    paragraphs' headings name the row (Table 2's also the data set)."""
    frame = cells_frame(records, table)
    prefix = "" if table.number == 1 else "CIFAR-10, "
    return [{"heading": f"**{prefix}{c.row}, {c.method.upper()}:", "ours": c.ours_mean, "paper": c.paper_mean,
             "paper_std": c.paper_std, "paths": list(c.paths)} for c in frame[frame["flagged"]].itertuples()]


def run_facts(path: Path) -> str:
    """What a ⚑ paragraph quotes about one record: how it stopped, where its test error settled."""
    s = json.loads((path / "summary.json").read_text())
    f = curve_facts(path)
    return (f"{path.name}: {f.last:.2f} % at epoch {f.epochs} ({s['stop_reason']}); mean of the last {f.window} "
            f"epochs {f.plateau:.2f}, lowest {f.lowest:.2f} at epoch {f.lowest_epoch}; online training error "
            f"{f.train_end:.2f} % at the end, {f.train_at_lowest:.2f} at the lowest")


def missing_paragraphs(page: str, records: Path) -> list[str]:
    """The ⚑ cells with no paragraph (``**<row>, <METHOD>:``) under the ⚑ heading of docs/differences.md."""
    section = page.split(DIFFER, 1)[1].split("\n## ", 1)[0] if DIFFER in page else ""
    return [c["heading"] for t in TABLES_SHOWN for c in flagged_cells(records, t) if c["heading"] not in section]


def figures(records: Path, target: Path) -> list[Path]:
    """Drawn by dfa-report and copied into ``target``: per table ours-vs-paper and each row's
    learning curves (Table 1 also the 100-layer net's), the figure runs' t-SNE and alignment maps, and
    the alignment of the experiments (named ``experiments_alignment_…``)."""
    out = Path(tempfile.mkdtemp(prefix="dfa-reproduction-"))
    import contextlib
    import io
    from dfa_cli.report.cli import main as report_main
    keep = []
    jobs = [([records / t.folder], ["--table", t.data, "--loss-reduction", t.reduction],
             [f"ours-vs-paper_table{t.number}", f"learning-curves_table{t.number}", f"depth_table{t.number}"], "")
            for t in TABLES_SHOWN]
    # the figure runs and the experiments trained on the batch-mean step: drawn as the runs they are
    mean_step = ["--loss-reduction", "mean"]
    jobs.append(([records / FIGURE_RUNS], mean_step, ["tsne_", "alignment_"], ""))
    jobs += [([records / runs], mean_step, ["alignment_"], EXPERIMENT_PREFIX) for runs in EXPERIMENT_RUNS]
    rule_runs = every_rule.collect_rules([records / f for f in RULE_FOLDERS if (records / f).is_dir()])
    if len(rule_runs):
        keep.append((every_rule.draw_errors(rule_runs, out / "rules_errors.png"), "rules_errors.png"))
        drawn = every_rule.draw_alignment(rule_runs, out / "rules_alignment_mnist_2x800-tanh.png")
        if drawn:
            keep.append((drawn, drawn.name))
    old = TABLE2_FULL_SIZE   # Table 2 on the batch-mean step, for its paragraphs in docs/differences.md
    jobs.append(([records / old.folder], ["--table", old.data, *mean_step],
                 [f"ours-vs-paper_table{old.number}", f"learning-curves_table{old.number}"], FULL_SIZE_PREFIX))
    for i, (paths, options, prefixes, rename) in enumerate(jobs):
        if not any(p.is_dir() for p in paths):
            continue
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                report_main([*map(str, paths), *options, "--out", str(out / str(i))])
            except SystemExit:   # (3: a figure could not be drawn; the others are there)
                pass
        keep += sorted((f, rename + f.name) for f in (out / str(i) / "figures").glob("*.png")
                       if f.name.startswith(tuple(prefixes)))
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    copied = []
    for f, name in keep:
        shutil.copy2(f, target / name)
        copied.append(target / name)
    shutil.rmtree(out, ignore_errors=True)
    return copied


def link(target: Path, page: Path) -> str:
    """``target`` as a link from ``page``, relative to the page's folder."""
    return Path(os.path.relpath(target, page.parent)).as_posix()


def of_kind(figure_files: list[Path], prefix: str) -> list[Path]:
    """By name: the block is the same whether the figures were just drawn or found on disk."""
    return sorted((f for f in figure_files if f.name.startswith(prefix)), key=lambda f: f.name)


def table_block(table: Table, records: Path, figure_files: list[Path], page: Path) -> str:
    """The front page's: the campaign's progress, the table ours beside the paper, the ours-vs-paper figure."""
    campaign = link(REPRODUCTION_PAGE, page) + table.anchor
    parts = ["The campaign: `python scripts/reproduce.py all` (one runner for both tables, two single-thread "
             f"jobs on a 2-core CPU, resumable; see [how it runs]({campaign})); this block: "
             "`python scripts/reproduction.py`.",
             "", progress(records, table), "", table_markdown([records / table.folder], table.data, parts=("cells",),
                                                              loss_reduction=table.reduction), ""]
    if table.number == 2:
        parts += [noise(records, table), ""]
    for f in of_kind(figure_files, f"ours-vs-paper_table{table.number}"):
        parts += [f"![Table {table.number}, ours beside the paper]({link(f, page)})", ""]
    return "\n".join(parts)


def noise(records: Path, table: Table) -> str:
    """How far each cell's test error moves from epoch to epoch at its plateau, per row and rule."""
    frame = cells_frame(records, table)
    cells = frame[~frame["shortened"] & (frame["n"] > 0)]
    if not len(cells):
        return "Plateau and epoch-to-epoch swing per row and rule: no full-protocol record yet."
    return f"Where each cell settles, and how far its test error moves from one epoch to the next there:\n\n{noise_markdown(cells)}"


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
        name = _row_name(row)
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


def details_block(table: Table, records: Path, figure_files: list[Path], page: Path) -> str:
    """docs/reproduction.md's: the paired differences vs BP, the dropout row's search, the curves' links."""
    parts = [table_markdown([records / table.folder], table.data, parts=("paired",), loss_reduction=table.reduction), ""]
    heading = "### The dropout row's validation search" if table.number == 1 else \
        f"### Table {table.number}: the dropout row's validation search"
    for name in (table.search, *table.method_searches):
        title = heading if name == table.search else f"{heading} for {SEARCHES[name].method.upper()}"
        search = search_table(table.searches_in(records), name, title)
        if search:
            parts += [search, ""]
    rows = of_kind(figure_files, f"learning-curves_table{table.number}")
    if rows:
        parts += ["Learning curves per row: " + " · ".join(
            f"[{f.stem.split('_')[-1]}]({link(f, page)})" for f in rows), ""]
    depth = of_kind(figure_files, f"depth_table{table.number}")
    if depth:
        parts += ["The 100-layer net, every method's test and training error over its epochs: " + " · ".join(
            f"[{f.stem.split('_')[-1]}]({link(f, page)})" for f in depth), ""]
    return "\n".join(parts)


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


def plateau_block(table: Table, records: Path, figure_files: list[Path], page: Path) -> str:
    """docs/differences.md's: where every full-protocol run of the table's cells settles."""
    frame = cells_frame(records, table)
    return plateau_markdown(frame[~frame["shortened"] & (frame["n"] > 0)], f"Table {table.number}")


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


class Block(NamedTuple):
    name: str                                          # in its markers
    page: Path                                         # the file that holds it
    body: Callable[[Path, list[Path], Path], str]      # (records, figure files, page) → Markdown


BLOCKS = [Block("table1", README, partial(table_block, TABLE1)),
          Block("table1-details", REPRODUCTION_PAGE, partial(details_block, TABLE1)),
          Block("table2", README, partial(table_block, TABLE2)),
          Block("table2-details", REPRODUCTION_PAGE, partial(details_block, TABLE2)),
          Block("figures", README, figures_block),
          Block("rules", README, rules_block),
          Block("table2-plateau", DIFFERENCES_PAGE, partial(plateau_block, TABLE2)),
          Block("table2-full-size-last-batch", DIFFERENCES_PAGE, full_size_block),
          Block("table1-summed-step", DIFFERENCES_PAGE, summed_step_block)]


def current(block: Block) -> str:
    """The text between ``block``'s markers on its page, without the markers."""
    text = block.page.read_text()
    start, end = start_marker(block.name), end_marker(block.name)
    if start not in text or end not in text.split(start, 1)[1]:
        sys.exit(f"reproduction: {block.page} has no generated block {block.name!r} (markers {start!r} … {end!r}).")
    return text.split(start, 1)[1].split(end, 1)[0]


def generated(block: Block, records: Path, figure_files: list[Path]) -> str:
    return "\n\n" + block.body(records, figure_files, block.page) + "\n"


def committed_figures() -> list[Path]:
    return sorted(FIGURES.glob("*.png"))


def stale_blocks(records: Path) -> list[str]:
    """The blocks whose text is not what the records (and the committed figures) give."""
    figure_files = committed_figures()
    return [b.name for b in BLOCKS if current(b) != generated(b, records, figure_files)]


def rewrite(records: Path) -> None:
    figure_files = figures(records, FIGURES)
    for b in BLOCKS:
        text = b.page.read_text()
        old = current(b)
        start = start_marker(b.name)
        b.page.write_text(text.replace(start + old, start + generated(b, records, figure_files), 1))
        print(f"reproduction: {b.page.relative_to(REPO)} block {b.name!r} regenerated from {records}",
              file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=Path, default=RECORDS)
    p.add_argument("--check", action="store_true", help="only compare the generated blocks with the records, "
                   "and check that every ⚑ cell has its paragraph")
    p.add_argument("--flagged", action="store_true", help="print each ⚑ cell's runs: how they stopped, their "
                   "last epochs' spread")
    args = p.parse_args()
    missing = missing_paragraphs(DIFFERENCES_PAGE.read_text(), args.records) if args.check or args.flagged else []
    if args.flagged:
        for cell in (c for t in TABLES_SHOWN for c in flagged_cells(args.records, t)):
            print(f"{cell['heading'].strip('*:')}: ours {cell['ours']:.2f}, paper {cell['paper']:.2f} ± {cell['paper_std']:.2f}")
            print("\n".join(f"  {run_facts(Path(path))}" for path in cell["paths"]))
        print(f"no paragraph yet under {DIFFER!r} in docs/differences.md: {', '.join(missing)}" if missing
              else "every ⚑ cell has its paragraph")
        return
    if args.check:
        stale = stale_blocks(args.records)
        for name in stale:
            print(f"reproduction: block {name!r} is not what {args.records} gives; run python scripts/reproduction.py",
                  file=sys.stderr)
        if missing:
            print(f"reproduction: no paragraph under {DIFFER!r} in docs/differences.md for {', '.join(missing)}",
                  file=sys.stderr)
        sys.exit(1 if stale or missing else 0)
    rewrite(args.records)


if __name__ == "__main__":
    main()
