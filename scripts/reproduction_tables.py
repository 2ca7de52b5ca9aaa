"""The paper's Tables 1–2 as the committed records fill them, for scripts/reproduction.py: which
records a table reads (:class:`Table`), how far the campaign is, the README's table block and
docs/reproduction.md's details block, the dropout rows' validation searches, and the ⚑ cells whose
paragraphs docs/differences.md holds."""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dfa_cli.report.build import Options, build_report, table_markdown  # noqa: E402
from dfa_cli.report.collect import collect  # noqa: E402
from dfa_cli.report.plateau import curve_facts, noise_markdown, plateau_markdown  # noqa: E402
from dfa_cli.campaign.runner import preset_sets  # noqa: E402
from dfa_cli.campaign.plans import PRESETS  # noqa: E402
from dfa_cli.campaign.searches import DROPOUT_SEARCH, METHOD_DROPOUT_SEARCHES, SEARCHES  # noqa: E402
from dfa_cli.report.spec import TABLES  # noqa: E402

README = REPO / "README.md"
REPRODUCTION_PAGE = REPO / "docs" / "reproduction.md"
DIFFERENCES_PAGE = REPO / "docs" / "differences.md"
RECORDS = REPO / "results" / "paper"


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
# step); the four-cell measurement on the author's summed step (reproduction_experiments.SUMMED_STEP) decides whether it reruns.
TABLE1 = Table("mnist", 1, "#reproducing-the-tables-on-a-cpu", reduction="mean")
TABLE2 = Table("cifar10", 2, "#table-2-on-a-cpu")
TABLES_SHOWN = (TABLE1, TABLE2)
STEP_NAMES = {"sum": "the author's summed step (the error summed over each batch, so an epoch's last, "
                     "partial batch steps short)",
              "mean": "the batch-mean step (every batch, the epoch's last, partial one too, a full-size step)"}


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
    machines = sorted({f"{s.get('device_name', '?')}{' ' + s['cpu_capability'] if s.get('cpu_capability') else ''} "
                       f"({s.get('device', '?')}, {s.get('threads', '?')} thread(s))" for s in everything})
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
    lines = [heading, "", f"{search.method.upper()}, {row_name(search.row)}, seed 0, trained on {size}, evaluated on the last 10k "
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


def row_name(preset: str) -> str:
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

def plateau_block(table: Table, records: Path, figure_files: list[Path], page: Path) -> str:
    """docs/differences.md's: where every full-protocol run of the table's cells settles."""
    frame = cells_frame(records, table)
    return plateau_markdown(frame[~frame["shortened"] & (frame["n"] > 0)], f"Table {table.number}")
