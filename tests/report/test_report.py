"""dfa-report: tables from run records, the paper beside ours; and the experiment presets.

Run directories are written here by the same writer dfa-run uses (``dfa_cli.runs.records``); nothing is a
hand-edited fixture. The numbers a test checks are computed by hand in the test.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import conftest
from dfa_cli import report
from dfa_cli.runs.records import RunRecord, replica_dirs
from dfa_cli.report import cells as report_cells
from dfa_cli.report import spec

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# What dfa-run's describe() and Trainer._finish() write for a paper-protocol MNIST run.
PROTOCOL_SUMMARY = {
    "method": "dfa", "model": "fc800x2", "activation": "tanh", "data": "mnist", "preprocess": "none",
    "dropout": "none", "variant": "none", "dropout_input": 0.0, "dropout_hidden": 0.0, "dropout_conv": None,
    "hidden": [800, 800], "loss": "bce", "loss_reduction": "sum", "init": "zero", "init_config": "paper", "optimizer": "rmsprop",
    "lr": 1e-4, "batch_size": 64, "max_epochs": 300, "stop_train_error": 0.01, "subset": None,
    "test_subset": None, "matmul_precision": "highest", "adversarial_eps": 0.0, "adversarial_clip": False,
    "eval_train": False, "lr_schedule": "constant", "lr_step_epochs": None, "lr_max_halvings": None,
    "eval_split": "test", "threads": 1, "fused_optimizer": False, "n_train": 60000, "n_test": 10000,
    "device": "cpu", "device_name": "cpu", "torch_version": "2.x", "git_commit": "0123456789abcdef",
    "best_epoch": 2, "stop_reason": "converged", "wall_seconds": 1.0, "seconds_per_epoch": 0.5,
    "stacked_seeds": 1, "lr_halvings": 0, "final_lr": 1e-4, "finished_at": "2026-01-01T00:00:00+0000",
}


def row_fields(method="dfa", model="fc800x2", activation="tanh", variant="none", **fields) -> dict:
    """The summary fields that follow from a run's row and method under the paper's protocol
    (the dropout row's schedule as its preset names it, whatever that is when the test runs)."""
    parts = variant.split("+")
    protocol = spec.row_protocol("mnist", model, activation, variant)
    return {"init": spec.paper_init(method, activation, model),
            "dropout_input": 0.1 if "dropout" in parts else 0.0, "dropout_hidden": 0.5 if "dropout" in parts else 0.0,
            "adversarial_eps": 0.08 if "adversarial" in parts else 0.0,
            "lr_schedule": protocol.lr_schedule, "lr_step_epochs": protocol.lr_step_epochs,
            "lr_max_halvings": protocol.lr_max_halvings, "max_epochs": protocol.max_epochs, "lr": protocol.lr}


def hydra_config(summary: dict, init: str = "paper") -> dict:
    """The parts of .hydra/config.yaml the report may read, consistent with ``summary``."""
    adversarial = {"eps": summary.get("adversarial_eps", 0.0), "clip": summary.get("adversarial_clip", False)}
    return {"adversarial": adversarial, "data": {"name": summary["data"], "subset": summary.get("subset"),
                                                 "test_subset": summary.get("test_subset")},
            "model": {"name": summary["model"], "activation": summary.get("activation")},
            "method": {"name": summary["method"]}, "init": {"name": init},
            "optim": {"name": summary.get("optimizer", "rmsprop"), "lr": summary.get("lr", 1e-4)},
            "loss": {"name": summary.get("loss", "bce")},
            "dropout": {"name": summary.get("dropout", "none"), "input": summary.get("dropout_input", 0.0),
                        "hidden": summary.get("dropout_hidden", 0.0)},
            "seed": summary.get("seed", 0), "seeds": None,
            "trainer": {"max_epochs": summary.get("max_epochs"), "stop_train_error": summary.get("stop_train_error", 0.01),
                        "batch_size": 64, "matmul_precision": "highest",
                        "lr_schedule": summary.get("lr_schedule", "constant")}}


def write_run(directory: Path, *, test_error, train_error=0.0, curve=(20.0, 5.0), summary_file=True,
              hydra=True, drop=(), **fields) -> Path:
    """A run directory as dfa-run leaves it: .hydra/, metrics.jsonl, then summary.json.

    ``drop``: summary fields to leave out (an older record)."""
    row = {k: fields.get(k, PROTOCOL_SUMMARY[k]) for k in ("method", "model", "activation", "variant")}
    summary = {**PROTOCOL_SUMMARY, **row_fields(**row), "best_test_error": test_error, **fields,
               "test_error": test_error, "train_error": train_error}
    if hydra:
        (directory / ".hydra").mkdir(parents=True, exist_ok=True)
        config = hydra_config(summary, summary["init_config"] if isinstance(summary["init_config"], str) else "paper")
        (directory / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        (directory / ".hydra" / "overrides.yaml").write_text("[]\n")
    record = RunRecord(directory)
    errors = [*curve, test_error]
    for epoch, err in enumerate(errors, 1):
        record.log_epoch({"epoch": epoch, "train_loss": 0.1, "train_error": train_error, "train_error_ema": 0.0,
                          "test_loss": 0.1, "test_error": err, "lr": 1e-4, "seconds": 0.5, "elapsed": epoch})
    if summary_file:
        summary = {"epochs": len(errors), **summary}
        record.write_summary({k: v for k, v in summary.items() if k not in drop})
    return directory


def write_cell(root: Path, name: str, errors, trains=None, seed0=0, **fields) -> list[Path]:
    """One separate run directory per seed (as ``-m seed=0,1,2``)."""
    trains = trains or [0.0] * len(errors)
    return [write_run(root / f"{name}_s{seed0 + i}", seed=seed0 + i, test_error=e, train_error=t, **fields)
            for i, (e, t) in enumerate(zip(errors, trains))]


def cli(*args, capsys) -> tuple[str, str]:
    report.main([str(a) for a in args])
    out = capsys.readouterr()
    return out.out, out.err


def csv_cells(root, *args, capsys) -> pd.DataFrame:
    out, _ = cli(root, "--format", "csv", *args, capsys=capsys)
    return pd.read_csv(io.StringIO(out), keep_default_na=True, dtype={"seeds": str})


def one(frame: pd.DataFrame, **where) -> pd.Series:
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, f"{len(rows)} rows match {where}"
    return rows.iloc[0]


def markdown_tables(text: str) -> list[list[str]]:
    """Each Markdown table in ``text`` as its list of lines."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


# ---- numbers ------------------------------------------------------------------------------
def test_mean_and_sample_std_over_seeds_are_exact(tmp_path, capsys):
    write_cell(tmp_path, "dfa", [1.70, 1.80, 1.75, 1.65, 1.90], trains=[0.0, 0.02, 0.01, 0.03, 0.04])
    cell = one(csv_cells(tmp_path, capsys=capsys), table="table1_mnist", row="2x800 tanh", method="dfa")
    # mean 8.80 / 5 = 1.76; squared deviations .0036 .0016 .0001 .0121 .0196 sum to .037; /4 → .00925
    assert cell["n"] == 5 and cell["seeds"] == "0 1 2 3 4"
    assert cell["ours_mean"] == pytest.approx(1.76)
    assert cell["ours_std"] == pytest.approx(math.sqrt(0.00925))
    assert cell["ours_train_error"] == pytest.approx(0.02)
    assert (cell["paper_mean"], cell["paper_std"]) == (1.74, 0.08)
    assert cell["delta"] == pytest.approx(0.02)
    assert not cell["flagged"] and not cell["shortened"]
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert "| 2x800 tanh |" in out and "1.76 ± 0.10 (0.02) n=5 | 1.74 ± 0.08 | +0.02 |" in out
    assert "sample std (ddof=1)" in out and "Nøkland (2016), Table 1" in out


def test_seeds_group_by_cell_whatever_the_folder_layout(tmp_path, capsys):
    write_cell(tmp_path / "sweep1", "bp", [1.5, 1.7], method="bp")           # one folder per seed
    write_cell(tmp_path / "sweep2", "bp", [1.6], seed0=2, method="bp")      # a later sweep, seed 2
    job = tmp_path / "sweep3" / "0_mnist_fc800x2_fa_s0"                      # five seeds stacked in one job
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(hydra_config({**PROTOCOL_SUMMARY, "method": "fa"})))
    for seed, d in zip(range(5), replica_dirs(job, list(range(5)))):
        write_run(d, seed=seed, test_error=1.6 + seed / 100, method="fa", stacked_seeds=5)
    cells = csv_cells(tmp_path, capsys=capsys)
    bp = one(cells, row="2x800 tanh", method="bp")
    fa = one(cells, row="2x800 tanh", method="fa")
    assert (bp["n"], bp["seeds"], bp["ours_mean"]) == (3, "0 1 2", pytest.approx(1.6))
    assert (fa["n"], fa["seeds"], fa["ours_mean"]) == (5, "0 1 2 3 4", pytest.approx(1.62))
    assert one(cells, row="2x800 tanh", method="dfa")["n"] == 0  # the paper's column, no runs of ours
    assert "other_runs" not in set(cells["table"])
    _, err = cli(tmp_path, "--format", "csv", capsys=capsys)
    assert "incomplete" not in err  # the stacked job's own folder is a container, not a broken run


def test_rows_are_told_apart_by_activation_and_variant(tmp_path, capsys):
    write_cell(tmp_path, "tanh", [1.6, 1.7])
    write_cell(tmp_path, "relu", [1.5, 1.5], activation="relu")
    write_cell(tmp_path, "drop", [1.4, 1.5], variant="dropout", dropout="paper")
    cells = csv_cells(tmp_path, capsys=capsys)
    assert one(cells, row="2x800 tanh", method="dfa")["ours_mean"] == pytest.approx(1.65)
    assert one(cells, row="2x800 ReLU", method="dfa")["ours_mean"] == pytest.approx(1.5)
    assert one(cells, row="2x800 tanh + dropout", method="dfa")["ours_mean"] == pytest.approx(1.45)
    rows = list(dict.fromkeys(cells.loc[cells["table"] == "table1_mnist", "row"]))
    assert rows[:3] == ["7x240 tanh", "100x240 tanh", "1x800 tanh"]  # the paper's order and shape
    assert rows[-1] == "2x800 tanh + adversarial"
    assert len(rows) == 10


def test_diverged_runs_are_counted_not_averaged(tmp_path, capsys):
    write_cell(tmp_path, "dfa", [1.6, 1.8])
    write_run(tmp_path / "dfa_s2", seed=2, test_error=None, train_error=None, stop_reason="diverged")
    cells = csv_cells(tmp_path, capsys=capsys)
    cell = one(cells, row="2x800 tanh", method="dfa")
    assert (cell["n"], cell["n_diverged"], cell["ours_mean"]) == (3, 1, pytest.approx(1.7))
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert "n=3, 1 diverged" in out


# ---- the flag rule ------------------------------------------------------------------------
@pytest.mark.parametrize("ours, ours_std, paper, paper_std, flagged", [
    (1.90, 0.05, 1.74, 0.08, False),   # |Δ| = 0.16 = 2 × paper std: at the boundary, not beyond
    (1.91, 0.05, 1.74, 0.08, True),    # just beyond
    (1.57, 0.05, 1.74, 0.08, True),    # below the paper as well
    (2.10, 0.20, 1.74, 0.08, False),   # our std is the larger: 2 × 0.20 = 0.40
    (2.15, 0.20, 1.74, 0.08, True),
    (1.84, math.nan, 1.74, 0.01, False),  # one seed (std NaN → 0): the 0.05 floor gives 0.10
    (1.85, math.nan, 1.74, 0.01, True),
    (1.74, 0.0, math.nan, math.nan, False),  # no paper value: nothing to flag
])
def test_flag_rule(ours, ours_std, paper, paper_std, flagged):
    assert report_cells.is_flagged(ours, ours_std, paper, paper_std) is flagged


def test_flag_is_marked_in_every_format(tmp_path, capsys):
    write_cell(tmp_path, "dfa", [2.10, 2.10], method="dfa")   # paper 1.74 ± 0.08 → Δ 0.36 > 0.16
    write_cell(tmp_path, "bp", [1.62, 1.58], method="bp")     # paper 1.60 ± 0.06
    cells = csv_cells(tmp_path, capsys=capsys)
    assert one(cells, row="2x800 tanh", method="dfa")["flagged"]
    assert not one(cells, row="2x800 tanh", method="bp")["flagged"]
    markdown, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert "+0.36 ⚑" in markdown and "+0.00 |" in markdown and "⚑ when |Δ| > 2 × max" in markdown
    latex, _ = cli(tmp_path, "--format", "latex", capsys=capsys)
    assert r"+0.36 $^{\ast}$" in latex
    rich, _ = cli(tmp_path, capsys=capsys)
    assert "Δ +0.36 ⚑" in rich


# ---- formats ------------------------------------------------------------------------------
def test_each_format_parses(tmp_path, capsys):
    write_cell(tmp_path, "dfa", [1.7, 1.8])
    write_cell(tmp_path, "odd", [2.0], model="fc400x3", hidden=[400, 400, 400])  # → other runs
    cells = csv_cells(tmp_path, capsys=capsys)
    assert set(cells["table"]) == {"table1_mnist", "other_runs"}
    assert {"ours_mean", "ours_std", "paper_mean", "delta", "flagged", "n", "setting"} <= set(cells.columns)
    assert cells["flagged"].dtype == bool

    markdown, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    tables = markdown_tables(markdown)
    assert len(tables) == 2
    for lines in tables:
        header, separator, *rows = lines
        assert set(separator.replace("|", "")) == {"-"}
        assert rows and all(line.count("|") == header.count("|") for line in lines)
    assert tables[0][0].startswith("| Model | BP | BP paper | BP Δ | FA |")
    assert tables[1][0] == "| Data | Model | Setting | DFA |"
    assert "| mnist | 3x400 tanh | paper protocol | 2.00 (0.00) n=1 |" in markdown

    latex, _ = cli(tmp_path, "--format", "latex", capsys=capsys)
    assert latex.count(r"\begin{tabular}") == 2 and latex.count(r"\end{tabular}") == 2
    assert r"\multicolumn{3}{c}{DFA}" in latex and r"1.75 $\pm$ 0.07" in latex

    rich, _ = cli(tmp_path, capsys=capsys)
    assert "Table 1 — MNIST" in rich and "2x800 tanh" in rich and "Other runs" in rich


# ---- which runs fill a paper cell ---------------------------------------------------------
def test_shortened_runs_fill_an_empty_cell_marked(tmp_path, capsys):
    write_cell(tmp_path, "quick", [9.0, 11.0], subset=2000, max_epochs=2, n_train=2000)
    cells = csv_cells(tmp_path, capsys=capsys)
    cell = one(cells, row="2x800 tanh", method="dfa")
    assert cell["shortened"] and cell["setting"] == "data.subset=2000, trainer.max_epochs=2"
    markdown, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert "10.00 ± 1.41 (0.00) n=2†" in markdown
    assert "† shortened runs, not the paper's protocol: data.subset=2000, trainer.max_epochs=2 (DFA 2x800 tanh)" \
        in markdown
    strict = csv_cells(tmp_path, "--strict", capsys=capsys)
    assert one(strict, table="other_runs", method="dfa")["n"] == 2


def test_protocol_runs_win_the_cell_the_rest_go_to_other_runs(tmp_path, capsys):
    write_cell(tmp_path, "full", [1.7, 1.8])
    write_cell(tmp_path, "quick", [9.0], subset=2000, n_train=2000)
    write_cell(tmp_path, "adam", [1.9], optimizer="adam", lr=1e-3)
    write_cell(tmp_path, "uniform", [1.9], init="uniform", init_config="uniform")
    write_cell(tmp_path, "tf32", [1.9], matmul_precision="high")
    write_cell(tmp_path, "dropout_rate", [1.9], variant="dropout", dropout="paper", hidden=[800, 400])
    write_cell(tmp_path, "binary", [1.9], feedback="binary")     # DFA's variants are not the paper's DFA
    write_cell(tmp_path, "sparse", [1.9], density=0.1, feedback_scale="source")
    cells = csv_cells(tmp_path, capsys=capsys)
    paper_cell = one(cells, table="table1_mnist", row="2x800 tanh", method="dfa")
    assert (paper_cell["n"], paper_cell["shortened"]) == (2, False)
    other = cells[cells["table"] == "other_runs"]
    assert set(other["setting"]) == {"data.subset=2000", "optim=adam, optim.lr=0.001", "init=uniform",
                                     "trainer.matmul_precision=high", "model.hidden=[800,400]",
                                     "method.feedback=binary", "method.density=0.1, method.feedback_scale=source"}


def test_the_two_training_steps_never_share_a_cell(tmp_path, capsys):
    """summary.json's loss_reduction: sum (the author's step) fills the cells; mean, and a record from
    before the key (which trained on the mean), go to other runs, as their own setting; --loss-reduction
    mean turns it round. The same seed on both steps is two runs, not a rerun."""
    write_cell(tmp_path, "summed", [1.70, 1.80])
    write_cell(tmp_path, "mean", [2.50], loss_reduction="mean")
    write_cell(tmp_path, "older", [2.70], seed0=1, drop=("loss_reduction",))
    cells = csv_cells(tmp_path, capsys=capsys)
    assert one(cells, table="table1_mnist", row="2x800 tanh", method="dfa")["ours_mean"] == pytest.approx(1.75)
    other = one(cells, table="other_runs", method="dfa")
    assert (other["setting"], other["n"], other["ours_mean"]) == ("loss.reduction=mean", 2, pytest.approx(2.6))
    cells = csv_cells(tmp_path, "--loss-reduction", "mean", capsys=capsys)
    assert one(cells, table="table1_mnist", row="2x800 tanh", method="dfa")["ours_mean"] == pytest.approx(2.6)
    assert one(cells, table="other_runs", method="dfa")["setting"] == "loss.reduction=sum"


def test_a_rerun_seed_counts_once_the_latest(tmp_path, capsys):
    write_run(tmp_path / "old", seed=0, test_error=5.0, finished_at="2026-01-01T00:00:00+0000")
    write_run(tmp_path / "new", seed=0, test_error=1.7, finished_at="2026-02-01T00:00:00+0000")
    cell = one(csv_cells(tmp_path, capsys=capsys), row="2x800 tanh", method="dfa")
    assert (cell["n"], cell["ours_mean"]) == (1, 1.7)
    markdown, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert "1 earlier record(s)" in markdown


def test_filters(tmp_path, capsys):
    write_cell(tmp_path, "dfa", [1.7])
    write_cell(tmp_path, "bp", [1.6], method="bp")
    write_cell(tmp_path, "c10", [50.0], data="cifar10", model="fc1000x1", hidden=[1000], n_train=50000)
    cells = csv_cells(tmp_path, "--table", "mnist", "--method", "dfa,ifa", capsys=capsys)
    assert set(cells["table"]) == {"table1_mnist"} and set(cells["method"]) == {"dfa", "ifa"}
    cells = csv_cells(tmp_path, "--table", "2", "--table", "cifar100", capsys=capsys)
    assert set(cells["table"]) == {"table2_cifar10", "table3_cifar100"}  # a chosen table shows, runs or not
    assert one(cells, table="table2_cifar10", row="1x1000 tanh", method="dfa")["ours_mean"] == 50.0
    cells = csv_cells(tmp_path, "--hide-empty", capsys=capsys)
    assert set(cells.loc[cells["table"] == "table1_mnist", "row"]) == {"2x800 tanh"}
    assert "| IFA" not in cli(tmp_path, "--format", "markdown", capsys=capsys)[0]
    write_cell(tmp_path, "ifa", [1.9], method="ifa")  # an IFA run adds the IFA column
    assert "| IFA | IFA paper | IFA Δ |" in cli(tmp_path, "--format", "markdown", capsys=capsys)[0]


def test_best_test_error_metric(tmp_path, capsys):
    write_run(tmp_path / "r", seed=0, test_error=1.9, best_test_error=1.6)
    cell = one(csv_cells(tmp_path, "--metric", "best_test_error", capsys=capsys), row="2x800 tanh", method="dfa")
    assert (cell["ours_mean"], cell["metric"]) == (1.6, "best_test_error")


# ---- robustness ---------------------------------------------------------------------------
def test_incomplete_and_corrupt_runs_are_listed_and_the_report_goes_on(tmp_path, capsys):
    write_cell(tmp_path, "good", [1.7, 1.8])
    running = write_run(tmp_path / "running", seed=5, test_error=1.7, summary_file=False)
    with open(running / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "test_er')  # a kill mid-line
    corrupt = write_run(tmp_path / "corrupt", seed=6, test_error=1.7)
    (corrupt / "summary.json").write_text('{"method": "dfa", ')
    nameless = write_run(tmp_path / "nameless", seed=7, test_error=1.7)
    summary = json.loads((nameless / "summary.json").read_text())
    del summary["method"]
    (nameless / "summary.json").write_text(json.dumps(summary))
    started = tmp_path / "started"
    (started / ".hydra").mkdir(parents=True)

    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert "1.75 ± 0.07 (0.00) n=2" in out
    problems = {line.split(" | ")[0].strip("| ").rsplit("/", 1)[-1]: line.split(" | ")[1]
                for line in markdown_tables(out)[-1][2:]}
    assert set(problems) == {"running", "corrupt", "nameless", "started"}
    assert "stopped after 3 logged epoch(s)" in problems["running"]
    assert "not valid JSON" in problems["corrupt"]
    assert "lacks method" in problems["nameless"]
    assert "no logged epoch" in problems["started"]

    _, err = cli(tmp_path, "--format", "csv", capsys=capsys)
    assert "4 incomplete or unreadable run(s)" in err


def run_cli(*args) -> subprocess.CompletedProcess:
    """``dfa-report args`` as its entry point runs it (report.main), in this process: exit code, stdout, stderr."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            report.main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if isinstance(stop.code, str):
                err.write(stop.code + "\n")
    return subprocess.CompletedProcess(["dfa-report", *map(str, args)], code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("case", ["missing", "empty", "file", "unwritable_out"])
def test_bad_input_is_one_sentence_and_a_nonzero_exit(tmp_path, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    write_cell(tmp_path / "results", "dfa", [1.7])
    args = {"missing": [tmp_path / "nope"], "empty": [tmp_path / "empty"], "file": [tmp_path / "a_file"],
            "unwritable_out": [tmp_path / "results", "--out", tmp_path / "a_file"]}[case]
    result = run_cli(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dfa-report: ") and lines[0].endswith(".")


def test_reads_files_only_and_help_is_light(tmp_path):
    write_cell(tmp_path / "results", "dfa", [1.7])
    code = ("import sys; from dfa_cli import report; report.main([sys.argv[1], '--out', sys.argv[2]]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m in "
            "('dfa_cli.training.engine', 'dfa_cli.nets.fc', 'dfa_cli.nets.rules', 'dfa_cli.data.datasets', 'dfa_cli.runs.records')))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "results"), str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    code = "import sys; from dfa_cli import report; print(sorted(m for m in ('pandas', 'rich', 'matplotlib') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True).stdout.strip() == "[]"
    module = subprocess.run([sys.executable, "-m", "dfa_cli.report", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)   # ``python -m dfa_cli.report``, a process of its own
    assert module.returncode == 0 and "dfa-report" in module.stdout


# ---- --out --------------------------------------------------------------------------------
def test_out_writes_every_table_in_every_format_and_valid_pngs(tmp_path, capsys):
    write_cell(tmp_path / "results", "dfa", [1.7, 1.8])
    write_cell(tmp_path / "results", "bp", [1.6, 1.6], method="bp")
    write_cell(tmp_path / "results", "odd", [2.0], model="fc400x3", hidden=[400, 400, 400])
    write_run(tmp_path / "results" / "running", seed=9, test_error=1.7, summary_file=False)
    out = tmp_path / "report"
    _, err = cli(tmp_path / "results", "--out", out, capsys=capsys)
    stems = ("table1_mnist", "table1_mnist_paired", "other_runs", "incomplete_runs", "runs")
    for stem in stems:
        for ext in ("md", "csv", "tex", "txt"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0, f"{stem}.{ext}"
    assert "2x800 tanh" in (out / "report.md").read_text()
    assert pd.read_csv(out / "table1_mnist.csv")["ours_mean"].notna().sum() == 2
    figures = sorted((out / "figures").glob("*.png"))
    names = {p.name for p in figures}
    assert {"ours-vs-paper_table1-mnist.png", "test-error_table1-mnist_2x800-tanh.png",
            "learning-curves_table1-mnist_2x800-tanh.png", "paired-vs-bp_table1-mnist.png",
            "test-error_other-runs_mnist_3x400-tanh.png"} <= names
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in figures)
    assert f"wrote {len(figures) + 4 * len(stems) + 1} files" in err   # + report.md


# ---- the paper's reference values ---------------------------------------------------------
def test_paper_tables_file():
    paper = spec.load_paper()
    assert paper.groupby("table")["row"].nunique().to_dict() == {1: 10, 2: 4, 3: 4}
    assert not paper.duplicated(subset=[*spec.ROW_KEY, "method"]).any()
    checked = paper[paper["checked_against"] != ""]
    assert len(checked) == 1
    assert (checked.iloc[0]["row"], checked.iloc[0]["method"], checked.iloc[0]["test_error"]) == \
        ("2x800 tanh + dropout", "dfa", 1.45)
    assert set(paper["source"]) == {f"Nøkland (2016), Table {n}" for n in (1, 2, 3)}
    blank = paper[(paper["row"] == "100x240 tanh")]
    assert list(blank["method"]) == ["dfa"]  # the paper leaves BP and FA blank there


# ---- experiment presets -------------------------------------------------------------------
def compose(*overrides):
    from hydra import compose as hydra_compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def row_key(cfg) -> tuple:
    from dfa_cli.run import variant
    return cfg.data.name, cfg.model.name, cfg.model.activation, variant(cfg)


PRESETS = {"table1_mnist": ("table1", "mnist", 10), "table2_cifar10": ("table2", "cifar10", 4),
           "table3_cifar100": ("table3", "cifar100", 4)}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_table_presets_sweep_every_row_and_method_with_five_stacked_seeds(preset):
    folder, data, n_rows = PRESETS[preset]
    params = compose(f"experiment={preset}").hydra.sweeper.params
    assert params["method"] == "bp,fa,dfa"
    rows = params[f"+experiment/{folder}"].split(",")
    assert len(rows) == n_rows
    assert sorted(rows) == sorted(p.stem for p in (REPO / "conf" / "experiment" / folder).glob("*.yaml"))
    paper = spec.load_paper()
    paper_rows = set(paper[spec.ROW_KEY].itertuples(index=False, name=None))
    swept = set()
    for row in rows:  # what one job of the sweep composes
        cfg = compose(f"experiment={preset}", f"+experiment/{folder}={row}", "method=fa")
        assert cfg.data.name == data and cfg.method.name == "fa"
        assert list(cfg.seeds) == [0, 1, 2, 3, 4]
        paper_lr = {("cifar10", "conv"): 5e-5, ("cifar100", "conv"): 2.5e-5}.get((data, cfg.model.name), 1e-4)
        protocol = spec.row_protocol(*row_key(cfg))
        epochs = 300
        if protocol.source:   # the dropout rows: chosen on the validation split (test_committed_records)
            paper_lr, epochs = protocol.lr, protocol.max_epochs
        assert cfg.optim.name == "rmsprop" and cfg.optim.lr == paper_lr and cfg.trainer.max_epochs == epochs
        assert (cfg.optim.lr, cfg.trainer.lr_schedule, cfg.trainer.max_epochs) == \
            (protocol.lr, protocol.lr_schedule, protocol.max_epochs)   # the report judges runs by what they ran
        assert row_key(cfg) in paper_rows
        swept.add(row_key(cfg))
    assert {r for r in paper_rows if r[0] == data} == swept  # every row is swept, adversarial included


def test_row_preset_sets_its_row_and_runs_on_its_own():
    cfg = compose("experiment=table1/fc800x2_tanh_dropout")
    assert row_key(cfg) == ("mnist", "fc800x2", "tanh", "dropout")
    assert (cfg.dropout.input, cfg.dropout.hidden) == (0.1, 0.5)
    assert list(cfg.seeds) == [0, 1, 2, 3, 4]
    assert cfg.hydra.sweeper.params["method"] == "bp,fa,dfa" and cfg.hydra.mode.name == "MULTIRUN"
    assert row_key(compose("experiment=table1/fc800x2_relu")) == ("mnist", "fc800x2", "relu", "none")
    assert row_key(compose("experiment=table1/fc240x100_tanh")) == ("mnist", "fc240x100", "tanh", "none")
    assert row_key(compose("experiment=table3/fc1000x3_tanh_dropout")) == ("cifar100", "fc1000x3", "tanh", "dropout")


# ---- end to end ---------------------------------------------------------------------------
def write_fake_mnist(root: Path, n_train: int = 300, n_test: int = 200) -> None:
    """idx files in torchvision's layout: class-dependent blobs, so one epoch learns something."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label:2 * label + 6, 4:24] = 255
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())


def test_end_to_end_tiny_multirun_then_report(tmp_path):
    write_fake_mnist(tmp_path / "data")
    results = tmp_path / "results"
    train = conftest.run_cli(
        "run", "-m", "method=bp,dfa", "seeds=[0,1]", "data.subset=256",
        "data.test_subset=128", "trainer.max_epochs=1", "model=fc800x1", f"results_dir={results}",
        f"data.root={tmp_path / 'data'}", "device=cpu", "trainer.progress=false")
    assert train.returncode == 0, train.stderr[-2000:]
    assert len(list(results.rglob("summary.json"))) == 4

    result = run_cli(results, "--format", "markdown")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| 1x800 tanh |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    bp, dfa = cells[1], cells[7]
    assert bp.endswith("n=2†") and dfa.endswith("n=2†")
    assert cells[2] == "1.59 ± 0.04" and cells[8] == "1.68 ± 0.05"
    assert "data.subset=256, data.test_subset=128, trainer.max_epochs=1" in result.stdout
    assert "incomplete" not in result.stdout.lower()

    terminal = run_cli(results)
    assert terminal.returncode == 0 and "1x800 tanh" in terminal.stdout and "n=2†" in terminal.stdout


@pytest.mark.slow
def test_table1_preset_real_sweep_fills_every_swept_row(tmp_path):
    """30 tiny jobs: each gets its row's settings and the stacked seeds; the report fills the table."""
    write_fake_mnist(tmp_path / "data")
    results = tmp_path / "results"
    train = subprocess.run(
        [sys.executable, "-m", "dfa_cli.run", "experiment=table1_mnist", "seeds=[0,1]", "data.subset=64",
         "data.test_subset=64", "trainer.max_epochs=1", f"results_dir={results}",
         f"data.root={tmp_path / 'data'}", "device=cpu", "trainer.progress=false"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    assert len(list(results.rglob("summary.json"))) == 10 * 3 * 2
    cells = pd.read_csv(io.StringIO(run_cli(results, "--format", "csv").stdout))
    filled = cells[cells["n"] > 0]
    assert len(filled) == 30 and (filled["n"] == 2).all() and set(filled["table"]) == {"table1_mnist"}
    assert (cells["n"] > 0).all()
