"""``dfa-report``: the command line. pandas, rich and matplotlib are imported once the arguments
parse, so ``--help`` stays instant.

Exit status: 0 done; 2 bad input (one sentence, nothing written); 3 the report is written but some
figures could not be drawn (each is named, with its reason, on stderr and in report.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .spec import FLAG, FLAG_FLOOR, METHODS, METRIC_NAMES, PROTOCOL_REDUCTION, REDUCTIONS, TABLE_ALIASES, TABLES

FORMATS = ("rich", "markdown", "csv", "latex")
FIGURES_FAILED = 3


class ReportError(Exception):
    """Bad input: one sentence for the user, no traceback."""


HELP = f"""\
Nøkland (2016)'s Tables 1–3 from dfa-run records, our numbers beside the paper's.

  dfa-report results/                               terminal tables
  dfa-report results/ --format markdown > tables.md
  dfa-report results/ --out report/                 every table in every format, figures, report.md
  dfa-report results/ --runs                        the records behind each cell (audit)
  dfa-report results/ --table mnist --method dfa    filters

Each cell: test error % (--metric), mean ± sample std (ddof=1) over seeds, mean training error
in parentheses, n runs; then the paper's value (at the paper's precision) and Δ = ours − paper.
{FLAG} marks |Δ| > 2 × max(paper std, our std, {FLAG_FLOOR}); diverged runs count in n, not in the mean.
Below each table: every method − BP over matched seeds, with a 95 % interval.

Which runs fill a paper cell — decided from summary.json (.hydra/config.yaml only for a field the
summary lacks): those run with the paper's protocol (RMSprop lr 1e-4, batch 64, BCE, the paper's
init, dropout and stop threshold, a constant LR for up to 300 epochs — the dropout row's schedule
as its preset names it —, the full data, the test split). A cell without such runs takes the
shortened runs (data.subset, data.test_subset, fewer epochs) with the most seeds, marked †, ‡, …
(one mark per setting, named in a footnote); --strict keeps them out. Everything else goes to
"other runs" with the overrides that set it apart; validation runs (data.split=validation) to
their own table. A seed recorded twice for one cell counts once (the latest record). Run folders
without a readable summary.json, or with a field of the wrong type, are listed with the reason.

Exit status: 0 done; 2 bad input; 3 written, but some figures failed (named on stderr).
"""


def _choices(kind: str, valid, aliases=None):
    """An argparse type for ``a,b`` lists checked against ``valid``; a bad item is named."""
    aliases = aliases or {}

    def parse(text: str) -> list[str]:
        items = [aliases.get(t.strip().lower(), t.strip().lower()) for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in valid]
        if bad or not items:
            what = ", ".join(repr(b) for b in bad) if bad else repr(text)
            raise argparse.ArgumentTypeError(f"unknown {kind} {what}; choose from {', '.join(valid)}")
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
                        "of every cell, raw numbers beside the rounded ones shown) or latex (booktabs)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="also write every table in every format (.md .csv .tex .txt), runs.* (the "
                        "records behind each cell), DIR/figures/*.png and DIR/report.md (each table "
                        "with its figures)")
    p.add_argument("--runs", action="store_true",
                   help="print the records behind each cell (path, seed, error, epochs, stop reason, "
                        "commit) instead of the tables")
    p.add_argument("--table", type=_choices("table", tuple(TABLES), TABLE_ALIASES), action="extend",
                   metavar="DATA", help="only these tables: mnist, cifar10, cifar100 (or 1, 2, 3); "
                   "repeat or separate with commas; a chosen table is shown even without runs")
    p.add_argument("--method", type=_choices("method", METHODS), action="extend", metavar="METHOD",
                   help=f"only these methods: {', '.join(METHODS)}; repeat or separate with commas")
    p.add_argument("--metric", choices=tuple(METRIC_NAMES), default="test_error",
                   help="test_error at the last epoch (default) or best_test_error (the best epoch's)")
    p.add_argument("--digits", type=int, default=2, choices=range(0, 5), metavar="N",
                   help="decimals of our numbers (default 2); the paper's keep their own")
    p.add_argument("--strict", action="store_true",
                   help="paper tables take protocol runs only; shortened runs go to other runs")
    p.add_argument("--tsne-points", type=_positive, default=1000, metavar="N",
                   help="with --out: examples per t-SNE map of runs that saved features.npz "
                        "(diagnostics.features=true, experiment=tsne); default 1000; maps are cached "
                        "in DIR/figures/.cache")
    p.add_argument("--hide-empty", action="store_true", help="leave out paper rows that have no runs of ours")
    p.add_argument("--loss-reduction", choices=REDUCTIONS, default=PROTOCOL_REDUCTION,
                   help="which training step fills the paper cells: sum, the author's summed error (default), "
                        "or mean, every batch a full-size step (records from before dfa-run's loss.reduction, "
                        "2026-12-07, trained so); runs on the other step go to other runs, never pooled")
    return p.parse_args(argv)


def _check_paths(paths: list[Path]) -> None:
    for path in paths:
        if not path.exists():
            raise ReportError(f"{path} does not exist; give the results folder dfa-run wrote to.")
        if not path.is_dir():
            raise ReportError(f"{path} is not a folder; give a results folder or a run folder.")


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


def _write(path: Path, text: str, written: list) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise ReportError(f"cannot write {path}: {err.strerror or err}; the files written before it "
                          f"are complete.") from None
    written.append(path)


def write_out(report, out: Path, tsne_points: int = 1000) -> tuple[list[Path], list]:
    """Every table in every format, the figures, then report.md with each table's figures under it."""
    from .gallery import write_figures
    from .render import report_markdown, to_csv, to_latex, to_markdown, to_text
    from .views import failures_view
    written = []

    def tables(views):
        for view in views:
            for ext, text in (("md", to_markdown(view)), ("csv", to_csv(view)), ("tex", to_latex(view)),
                              ("txt", to_text([view]))):
                _write(out / f"{view.key}.{ext}", text, written)
    tables([*report.views, report.runs])   # first: a figure that fails costs no table
    gallery = write_figures(report.views, out / "figures", tsne_points,
                            progress=lambda line: print(f"dfa-report: {line}", file=sys.stderr, flush=True))
    for view in report.views:
        view.figures = gallery.figures.get(view.key, [])
    if gallery.failures:
        report.views.append(failures_view(gallery.failures))
        tables(report.views[-1:])
    _write(out / "report.md", report_markdown(report), written)
    return written + gallery.written, gallery.failures


def run(args: argparse.Namespace) -> int:
    _check_paths(args.paths)
    out = prepare_out(args.out) if args.out else None
    from .build import Options, build_report
    from .collect import collect
    from .render import print_rich, report_csv, report_latex, report_markdown, to_csv, to_latex, to_markdown
    collected = collect(args.paths)
    if collected.runs.empty and collected.problems.empty:
        where = ", ".join(str(p) for p in args.paths)
        raise ReportError(f"no run records under {where}: no folder there holds summary.json, "
                          f"metrics.jsonl or .hydra/.")
    options = Options(args.table, args.method, args.metric, args.digits, args.strict, args.hide_empty,
                      args.loss_reduction)
    report = build_report(collected, options)
    if args.runs:
        view = report.runs
        render = {"rich": None, "markdown": to_markdown, "csv": to_csv, "latex": to_latex}[args.format]
        print_rich([view], []) if render is None else sys.stdout.write(render(view))
    elif args.format == "rich":
        print_rich(report.views, report.notes)
    else:
        sys.stdout.write({"markdown": report_markdown, "csv": report_csv, "latex": report_latex}[args.format](report))
        left_out = int((~collected.problems["counted"]).sum())
        if args.format == "csv" and left_out:
            print(f"dfa-report: {left_out} incomplete or unreadable run(s) are not in the CSV; "
                  f"see them with --format rich or in --out.", file=sys.stderr)
    if not out:
        return 0
    written, failures = write_out(report, out, tsne_points=args.tsne_points)
    print(f"dfa-report: wrote {len(written)} files to {out}", file=sys.stderr)
    for name, reason in failures:
        print(f"dfa-report: figure {name} not drawn: {reason}", file=sys.stderr)
    return FIGURES_FAILED if failures else 0


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        status = run(args)
    except ReportError as err:
        print(f"dfa-report: {err}", file=sys.stderr)
        sys.exit(2)
    if status:
        sys.exit(status)
