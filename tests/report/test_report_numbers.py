"""Honest numbers (issue 12, item 4): the paper at its own precision, one mark per shortened setting,
no flag on a marked cell, display columns in the CSV, paired differences vs BP, and the records
behind each cell."""
from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from dfa_cli.report import cells as report_cells

from test_report import cli, csv_cells, markdown_tables, one, write_cell


def table_row(markdown: str, title_start: str, row: str) -> list[str]:
    table = next(t for t in markdown.split("### ")[1:] if t.startswith(title_start))
    line = next(line for line in table.splitlines() if line.startswith(f"| {row} |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


@pytest.mark.parametrize("digits", ["0", "1", "3"])
def test_the_paper_keeps_its_own_precision_whatever_the_digits(tmp_path, capsys, digits):
    write_cell(tmp_path, "bp", [1.61, 1.63], method="bp", model="fc800x1", hidden=[800])
    out, _ = cli(tmp_path, "--format", "markdown", "--digits", digits, capsys=capsys)
    cells = table_row(out, "Table 1", "1x800 tanh")
    assert cells[2] == "1.59 ± 0.04"                          # the paper, as printed
    assert cells[1] == f"{1.62:.{digits}f} ± {math.sqrt(0.0002):.{digits}f} ({0:.{digits}f}) n=2"
    latex, _ = cli(tmp_path, "--format", "latex", "--digits", digits, capsys=capsys)
    assert r"1.59 $\pm$ 0.04" in latex


def test_each_shortened_setting_has_its_own_mark_and_footnote(tmp_path, capsys):
    write_cell(tmp_path, "bp", [9.0, 9.2], method="bp", subset=2000, n_train=2000)
    write_cell(tmp_path, "fa", [9.5], method="fa", subset=2000, n_train=2000)
    write_cell(tmp_path, "dfa", [5.0], method="dfa", max_epochs=20)
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    cells = table_row(out, "Table 1", "2x800 tanh")
    assert cells[1].endswith("n=2†") and cells[4].endswith("n=1†") and cells[7].endswith("n=1‡")
    assert "- † shortened runs, not the paper's protocol: data.subset=2000 (BP 2x800 tanh, FA 2x800 tanh)." in out
    assert "- ‡ shortened runs, not the paper's protocol: trainer.max_epochs=20 (DFA 2x800 tanh)." in out
    latex, _ = cli(tmp_path, "--format", "latex", capsys=capsys)
    assert r"n=2$^{\dagger}$" in latex and r"n=1$^{\ddagger}$" in latex


def test_a_marked_cell_is_never_flagged_and_shows_no_delta(tmp_path, capsys):
    write_cell(tmp_path, "quick", [9.0, 11.0], subset=2000, n_train=2000)   # Δ ≈ +8: far from the paper
    cell = one(csv_cells(tmp_path, capsys=capsys), table="table1_mnist", row="2x800 tanh", method="dfa")
    assert cell["shortened"] and not cell["flagged"] and cell["delta"] == pytest.approx(10.0 - 1.74)
    assert pd.isna(cell["delta_display"])          # the raw Δ stays in the CSV; no Δ is shown beside it
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert table_row(out, "Table 1", "2x800 tanh")[9] == "—"


def test_the_csv_carries_rounded_display_columns_beside_the_raw_ones(tmp_path, capsys):
    write_cell(tmp_path, "dfa", [2.101, 2.12, 2.14], trains=[0.01, 0.02, 0.03])
    cell = one(csv_cells(tmp_path, "--digits", "1", capsys=capsys), table="table1_mnist", row="2x800 tanh",
               method="dfa")
    assert cell["ours_mean"] == pytest.approx((2.101 + 2.12 + 2.14) / 3)
    assert cell["ours_display"] == "2.1 ± 0.0 (0.0) n=3"
    assert cell["paper_display"] == "1.74 ± 0.08"
    assert cell["delta_display"] == "+0.4 ⚑" and cell["flagged"]   # |Δ| .38 > 2 × .08


def test_a_difference_that_rounds_to_zero_has_no_minus_sign(tmp_path, capsys):
    write_cell(tmp_path, "bp", [1.587, 1.589], method="bp", model="fc800x1", hidden=[800])   # paper 1.59
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert table_row(out, "Table 1", "1x800 tanh")[3] == "+0.00"      # Δ = 1.588 − 1.59 < 0


def test_paired_differences_over_matched_seeds_with_a_95_percent_interval(tmp_path, capsys):
    write_cell(tmp_path, "bp", [1.60, 1.70, 1.65], method="bp")
    write_cell(tmp_path, "dfa", [1.80, 1.75, 1.90, 2.00], method="dfa")     # seed 3 has no BP partner
    write_cell(tmp_path, "fa", [1.66], method="fa", seed0=2)                # one pair: no interval
    pairs = report_cells.paired(*_placed(tmp_path, capsys))
    dfa = one(pairs, row="2x800 tanh", method="dfa")
    # by hand: differences .20 .05 .25 → mean .16667; sd² = (.0333² + .1167² + .0833²)/2 = .010833;
    # t(.975, 2) = 4.302653 → half width 4.302653 × .104083 / √3 = .258553
    assert (dfa["n_pairs"], dfa["seeds"]) == (3, "0 1 2")
    assert dfa["mean_diff"] == pytest.approx(0.166667, abs=1e-5)
    assert (dfa["ci_low"], dfa["ci_high"]) == (pytest.approx(0.166667 - 0.258553, abs=1e-5),
                                               pytest.approx(0.166667 + 0.258553, abs=1e-5))
    fa = one(pairs, row="2x800 tanh", method="fa")
    assert fa["n_pairs"] == 1 and fa["mean_diff"] == pytest.approx(0.01) and math.isnan(fa["ci_low"])
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    cells = table_row(out, "Table 1 — MNIST: paired", "2x800 tanh")
    assert cells[1:] == ["+0.01 n=1", "+0.17 [-0.09, +0.43] n=3"]


def test_a_clear_paired_difference_says_which_way(tmp_path, capsys):
    write_cell(tmp_path, "bp", [1.60, 1.62, 1.61], method="bp")
    write_cell(tmp_path, "dfa", [1.90, 1.93, 1.91], method="dfa")
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert table_row(out, "Table 1 — MNIST: paired", "2x800 tanh")[2].endswith("higher n=3")


def test_pairs_of_shortened_runs_carry_the_table_s_mark(tmp_path, capsys):
    write_cell(tmp_path, "bp", [9.0, 9.1], method="bp", max_epochs=30)
    write_cell(tmp_path, "fa", [9.2, 9.4], method="fa", max_epochs=30)
    write_cell(tmp_path, "dfa", [1.8, 1.9], method="dfa")
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert table_row(out, "Table 1", "2x800 tanh")[4].endswith("n=2†")
    # by hand: differences .2 .3, sd .070711, t(.975, 1) = 12.7062 → half width .635310
    assert table_row(out, "Table 1 — MNIST: paired", "2x800 tanh")[1] == "+0.25 [-0.39, +0.89] n=2†"
    assert "pairs of shortened runs, marked as in the table above; not the paper's protocol." in out


def test_runs_of_different_settings_are_not_paired(tmp_path, capsys):
    write_cell(tmp_path, "bp", [9.0, 9.1], method="bp", max_epochs=30)
    write_cell(tmp_path, "dfa", [1.8, 1.9], method="dfa")
    pairs = report_cells.paired(*_placed(tmp_path, capsys))
    assert one(pairs, row="2x800 tanh", method="dfa")["n_pairs"] == 0
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert "Table 1 — MNIST: paired" not in out   # no pair anywhere: no table of them


def _placed(root, capsys):
    """(runs placed in paper cells, table 1's cells, metric) as the report builds them."""
    from dfa_cli.report.build import Options
    from dfa_cli.report.cells import drop_superseded, paper_cells, place_runs, table_methods
    from dfa_cli.report.collect import collect
    from dfa_cli.report.spec import ROW_KEY, load_paper
    paper = load_paper()
    runs, _ = drop_superseded(collect([root]).runs)
    runs = place_runs(runs, set(paper[ROW_KEY].itertuples(index=False, name=None)), Options().strict)
    placed = runs[runs["place"] == "paper"]
    return placed, paper_cells("mnist", placed, paper, "test_error", table_methods(placed["method"], None)), \
        "test_error"


def test_runs_lists_the_records_behind_each_cell(tmp_path, capsys):
    paths = write_cell(tmp_path, "dfa", [1.7, 1.8], git_commit="abcdef0123456789ffff")
    write_cell(tmp_path, "odd", [2.0], model="fc400x3", hidden=[400, 400, 400], stop_reason="max_epochs")
    out, _ = cli(tmp_path, "--runs", "--format", "csv", capsys=capsys)
    runs = pd.read_csv(io.StringIO(out))
    assert list(runs.columns) == ["table", "row", "method", "setting", "seed", "test_error", "train_error",
                                  "epochs", "stop_reason", "git_commit", "path"]
    first = one(runs, path=str(paths[0]))
    assert (first["table"], first["row"], first["seed"], first["test_error"], first["epochs"],
            first["stop_reason"], first["git_commit"]) == \
        ("table1_mnist", "2x800 tanh", 0, 1.7, 3, "converged", "abcdef0123456789ffff")
    assert one(runs, table="other_runs")["row"] == "3x400 tanh"
    markdown, _ = cli(tmp_path, "--runs", "--format", "markdown", capsys=capsys)
    (table,) = markdown_tables(markdown)
    assert table[0] == "| Table | Model | Method | Setting | Seed | Error | Train | Epochs | Stop | Commit | Path |"
    assert f"| table1_mnist | 2x800 tanh | DFA | paper protocol | 1 | 1.80 | 0.00 | 3 | converged | abcdef012345 | {paths[1]} |" \
        in markdown
    rich, _ = cli(tmp_path, "--runs", capsys=capsys)
    assert "Runs behind each cell (3)" in rich
    # piped (not a terminal), the table is printed at full width: every path whole on one line
    assert all(any(str(path) in line for line in rich.splitlines()) for path in paths)


def test_table_markdown_gives_one_table_from_record_paths(tmp_path):
    from dfa_cli.report.build import table_markdown
    write_cell(tmp_path / "a", "dfa", [1.7, 1.8])
    write_cell(tmp_path / "b", "bp", [1.6, 1.62], method="bp")
    write_cell(tmp_path / "b", "c10", [50.0], data="cifar10", model="fc1000x1", hidden=[1000], n_train=50000)
    text = table_markdown([tmp_path / "a", str(tmp_path / "b")])
    tables = markdown_tables(text)
    assert len(tables) == 2 and tables[0][0].startswith("| Model | BP | BP paper | BP Δ |")
    assert "| 2x800 tanh | 1.61 ± 0.01 (0.00) n=2 | 1.60 ± 0.06 | +0.01 |" in text
    assert "### Table 1 — MNIST: paired differences vs BP" in text and "sample std (ddof=1)" in text
    assert "CIFAR" not in text and "Other runs" not in text
