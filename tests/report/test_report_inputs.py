"""dfa-report on records that are wrong, partial or old (issue 12, items 2 and 3): a wrong-typed
record is refused with the field named, never averaged; a paper cell is decided from summary.json,
with .hydra/ only filling what the summary lacks; validation runs never fill a paper cell."""
from __future__ import annotations

import json

import pytest
import yaml

from dfa_cli.report import cli as report_cli
from dfa_cli.report import spec

from test_report import cli, csv_cells, markdown_tables, one, write_cell, write_run


def problems_of(root, capsys) -> dict[str, tuple[str, str]]:
    """run folder name → (reason, in tables) from the Markdown problems table."""
    out, _ = cli(root, "--format", "markdown", capsys=capsys)
    lines = [t for t in markdown_tables(out) if t[0].startswith("| Run | Reason")][0][2:]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return {c[0].rsplit("/", 1)[-1]: (c[1], c[2]) for c in cells}


def rewrite_summary(directory, **changes):
    path = directory / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(changes)
    path.write_text(json.dumps(summary))


# ---- item 2: wrong-typed records are refused, not averaged --------------------------------------
@pytest.mark.parametrize("field, value, words", [
    ("test_error", "25.3", "summary.json: test_error is '25.3' (text), not a number"),
    ("test_error", None, "summary.json: test_error is null, but the run did not diverge"),
    ("train_error", True, "summary.json: train_error is True, not a number"),
    ("method", "xyz", "summary.json: method is 'xyz' (text), not a known method (bp, fa, dfa, ifa"),
    ("seed", "one", "summary.json: seed is 'one' (text), not a whole number"),
    ("seed", 1.5, "summary.json: seed is 1.5, not a whole number"),
    ("data", "svhn", "summary.json: data is 'svhn' (text), not a known data set"),
    ("max_epochs", "300", "summary.json: max_epochs is '300' (text), not a whole number"),
    ("stop_train_error", [0.01], "summary.json: stop_train_error is [0.01] (a list), not a number"),
    ("lr_schedule", "cosine", "summary.json: lr_schedule is 'cosine' (text), not one of constant, step, auto"),
    ("stop_reason", 3, "summary.json: stop_reason is 3, not one of converged"),
    ("loss_reduction", "avg", "summary.json: loss_reduction is 'avg' (text), not one of sum, mean"),
])
def test_a_wrong_typed_record_is_refused_with_the_field_named(tmp_path, capsys, field, value, words):
    write_cell(tmp_path, "good", [1.70, 1.80])
    bad = write_run(tmp_path / "bad", seed=2, test_error=1.75)
    rewrite_summary(bad, **{field: value})
    cell = one(csv_cells(tmp_path, capsys=capsys), table="table1_mnist", row="2x800 tanh", method="dfa")
    assert (cell["n"], cell["ours_mean"]) == (2, pytest.approx(1.75))   # the bad record is in no mean
    reason, counted = problems_of(tmp_path, capsys)["bad"]
    assert words in reason and counted == "no"
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert "| XYZ" not in out and "| IFA" not in out   # no column for an unknown method


def test_a_diverged_run_may_have_null_errors_but_a_missing_field_is_named(tmp_path, capsys):
    write_run(tmp_path / "diverged", seed=0, test_error=None, train_error=None, stop_reason="diverged")
    lacking = write_run(tmp_path / "lacking", seed=1, test_error=1.7)
    summary = json.loads((lacking / "summary.json").read_text())
    del summary["train_error"]
    (lacking / "summary.json").write_text(json.dumps(summary))
    cell = one(csv_cells(tmp_path, capsys=capsys), row="2x800 tanh", method="dfa")
    assert (cell["n"], cell["n_diverged"]) == (1, 1)
    assert problems_of(tmp_path, capsys)["lacking"][0] == "summary.json lacks train_error"


def test_a_truncated_metrics_file_is_named_and_the_run_still_counts(tmp_path, capsys):
    write_cell(tmp_path, "good", [1.70])
    cut = write_run(tmp_path / "cut", seed=1, test_error=1.80)
    text = (cut / "metrics.jsonl").read_text()
    (cut / "metrics.jsonl").write_text(text[:-20])           # killed mid-line
    short = write_run(tmp_path / "short", seed=2, test_error=1.90)
    lines = (short / "metrics.jsonl").read_text().splitlines(keepends=True)
    (short / "metrics.jsonl").write_text("".join(lines[:-1]))  # a whole epoch lost
    cell = one(csv_cells(tmp_path, capsys=capsys), row="2x800 tanh", method="dfa")
    assert (cell["n"], cell["ours_mean"]) == (3, pytest.approx(1.80))   # the summaries are sound
    problems = problems_of(tmp_path, capsys)
    assert "metrics.jsonl is cut off" in problems["cut"][0] and problems["cut"][1] == "yes"
    assert "ends at epoch 2 but summary.json says 3 epochs" in problems["short"][0]
    assert "good" not in problems


def test_an_unknown_method_in_the_filter_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        report_cli.parse_args([str(tmp_path), "--method", "dfa,xx"])
    err = capsys.readouterr().err
    assert "unknown method 'xx'; choose from bp, fa, dfa, ifa, shallow, drtp, usf, brsf, frsf" in err
    assert "'dfa,xx'" not in err


# ---- the extra methods --------------------------------------------------------------------------
def test_extra_methods_are_columns_of_their_table_without_a_paper_value(tmp_path, capsys):
    write_cell(tmp_path, "bp", [1.6, 1.7], method="bp")
    write_cell(tmp_path, "drtp", [2.6, 2.9], method="drtp")
    cells = csv_cells(tmp_path, capsys=capsys)
    drtp = one(cells, table="table1_mnist", row="2x800 tanh", method="drtp")
    assert drtp["n"] == 2 and drtp["paper_display"] != drtp["paper_display"]   # NaN: no paper value
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert "| DRTP | DRTP paper | DRTP Δ |" in out and "| DRTP − BP |" in out


# ---- item 3: cells are decided from summary.json ------------------------------------------------
def test_a_record_without_hydra_is_judged_by_its_summary(tmp_path, capsys):
    write_cell(tmp_path, "paper", [1.70, 1.80], hydra=False)
    write_cell(tmp_path, "zero", [1.9], seed0=5, hydra=False, init_config="zero")
    write_cell(tmp_path, "stop5", [2.0], seed0=6, hydra=False, stop_train_error=5.0)
    write_cell(tmp_path, "drop", [2.1], seed0=7, hydra=False, dropout_hidden=0.3)
    write_cell(tmp_path, "sched", [2.2], seed0=8, hydra=False, lr_schedule="step", lr_step_epochs=50)
    cells = csv_cells(tmp_path, capsys=capsys)
    cell = one(cells, table="table1_mnist", row="2x800 tanh", method="dfa")
    assert (cell["n"], cell["seeds"]) == (2, "0 1")
    other = cells[cells["table"] == "other_runs"]
    assert set(other["setting"]) == {"init=zero", "trainer.stop_train_error=5.0", "dropout.hidden=0.3",
                                     "trainer.lr_schedule=step, trainer.lr_step_epochs=50"}


def test_tf32_on_a_gpu_is_not_the_paper_s_fp32(tmp_path, capsys):
    write_cell(tmp_path, "fp32", [1.7], device="cuda:0")
    write_cell(tmp_path, "tf32", [1.8], seed0=1, device="cuda:0", cuda_matmul_allow_tf32=True)
    write_cell(tmp_path, "cpu", [1.9], seed0=2, device="cpu", cuda_matmul_allow_tf32=True)   # no TF32 on a CPU
    cells = csv_cells(tmp_path, capsys=capsys)
    assert one(cells, table="table1_mnist", row="2x800 tanh", method="dfa")["seeds"] == "0 2"
    assert one(cells, table="other_runs", method="dfa")["setting"] == "tf32=on"


def test_hydra_fills_only_what_the_summary_lacks(tmp_path, capsys):
    old = ("init_config", "init", "stop_train_error", "dropout_input", "dropout_hidden", "lr_schedule")
    write_cell(tmp_path, "old", [1.70, 1.80], drop=old)                          # .hydra/ has it: paper
    write_cell(tmp_path, "old_stop", [1.9], seed0=4, drop=old, stop_train_error=5.0)   # from the config
    write_cell(tmp_path, "bare", [2.0], seed0=6, drop=old, hydra=False)           # nobody has it
    cells = csv_cells(tmp_path, capsys=capsys)
    assert one(cells, table="table1_mnist", row="2x800 tanh", method="dfa")["n"] == 2
    other = cells[cells["table"] == "other_runs"].set_index("seeds")["setting"]
    assert other["4"] == "trainer.stop_train_error=5.0"
    assert other["6"] == ("trainer.stop_train_error=?, init=?, dropout.input=?, dropout.hidden=?")


def test_the_summary_wins_over_the_config(tmp_path, capsys):
    run = write_run(tmp_path / "r", seed=0, test_error=1.7)
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    config["trainer"]["stop_train_error"] = 5.0   # stale or edited: the summary is what ran
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    assert one(csv_cells(tmp_path, capsys=capsys), table="table1_mnist", row="2x800 tanh", method="dfa")["n"] == 1


def test_older_records_resolved_init_is_checked_against_the_paper_rule(tmp_path, capsys):
    write_cell(tmp_path, "fa_ok", [1.7], method="fa", init="zero_above_first", drop=("init_config",), hydra=False)
    write_cell(tmp_path, "fa_zero", [1.8], seed0=1, method="fa", init="zero", drop=("init_config",), hydra=False)
    cells = csv_cells(tmp_path, capsys=capsys)
    assert one(cells, table="table1_mnist", row="2x800 tanh", method="fa")["seeds"] == "0"
    assert one(cells, table="other_runs", method="fa")["setting"] == "init=zero"


def test_paper_init_agrees_with_the_training_code():
    from dfa_cli.nets.fc import resolve_init
    for method in ("bp", "fa", "dfa", "ifa"):
        for activation in ("tanh", "logistic", "relu"):
            for model, kind in (("fc800x2", "fc"), ("conv", "conv")):
                assert spec.paper_init(method, activation, model) == resolve_init("paper", method, activation, kind)


def test_validation_runs_have_their_own_table_and_never_fill_a_paper_cell(tmp_path, capsys):
    for seed in (0, 1):
        run = write_run(tmp_path / f"val{seed}", seed=seed, test_error=1.5, eval_split="validation", n_train=50000)
        summary = json.loads((run / "summary.json").read_text())
        for key in ("test_error", "best_test_error", "test_loss"):
            summary[key.replace("test", "val")] = summary.pop(key, 0.1)
        (run / "summary.json").write_text(json.dumps(summary))
    cells = csv_cells(tmp_path, capsys=capsys)
    assert "table1_mnist" not in set(cells["table"])   # no paper table: no test-split run
    val = one(cells, table="validation_runs", method="dfa")
    assert (val["n"], val["ours_mean"]) == (2, 1.5)
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert "### Validation runs" in out and "Runs left out" not in out


def test_the_dropout_row_takes_its_protocol_from_its_preset(tmp_path, capsys, monkeypatch):
    conf = tmp_path / "conf"
    (conf / "experiment" / "table1").mkdir(parents=True)
    (conf / "config.yaml").write_text(yaml.safe_dump({"trainer": {"lr_step_epochs": 50, "lr_max_halvings": 8}}))
    preset = conf / "experiment" / "table1" / "fc800x2_tanh_dropout.yaml"
    monkeypatch.setattr(spec, "conf_dir", lambda: conf)
    drop = {"variant": "dropout", "dropout": "paper", "dropout_input": 0.1, "dropout_hidden": 0.5}
    runs = tmp_path / "runs"
    write_cell(runs, "constant", [1.5, 1.6], **drop, lr_schedule="constant", max_epochs=300)
    write_cell(runs, "auto", [1.4], seed0=5, **drop, lr_schedule="auto", lr_max_halvings=8, max_epochs=300)
    preset.write_text("# @package _global_\nmodel:\n  activation: tanh\n")   # no choice yet: constant
    cells = csv_cells(runs, capsys=capsys)
    assert one(cells, table="table1_mnist", row="2x800 tanh + dropout", method="dfa")["seeds"] == "0 1"
    preset.write_text(yaml.safe_dump({"trainer": {"lr_schedule": "auto", "max_epochs": 300}}))
    cells = csv_cells(runs, capsys=capsys)
    assert one(cells, table="table1_mnist", row="2x800 tanh + dropout", method="dfa")["seeds"] == "5"
    assert one(cells, table="other_runs", method="dfa")["setting"] == "trainer.lr_schedule=constant"
    out, _ = cli(runs, "--format", "markdown", capsys=capsys)
    assert "LR schedule auto (halved when an epoch's training error ≥ its EMA, at most 8 times)" in out
    preset.write_text(yaml.safe_dump({"trainer": {"lr_schedule": "step", "lr_step_epochs": 100,
                                                  "max_epochs": 250}}))
    write_cell(runs, "step", [1.3], seed0=7, **drop, lr_schedule="step", lr_step_epochs=100, max_epochs=250)
    write_cell(runs, "step_short", [1.9], seed0=8, **drop, lr_schedule="step", lr_step_epochs=100, max_epochs=20)
    cells = csv_cells(runs, capsys=capsys)
    assert one(cells, table="table1_mnist", row="2x800 tanh + dropout", method="dfa")["seeds"] == "7"
    short = one(cells, table="other_runs", seeds="8")   # shortened, but the cell has protocol runs
    assert short["setting"] == "trainer.max_epochs=20" and short["shortened"]


def test_the_deep_row_s_bounded_bp_and_fa_runs_are_marked_cells(tmp_path, capsys):
    deep = {"model": "fc240x100", "hidden": [240] * 100}
    write_cell(tmp_path, "bp", [88.65], method="bp", max_epochs=30, **deep)
    write_cell(tmp_path, "fa", [88.65], method="fa", max_epochs=30, **deep)
    write_cell(tmp_path, "dfa", [3.9, 4.0], method="dfa", **deep)
    cells = csv_cells(tmp_path, capsys=capsys)
    for method in ("bp", "fa"):
        cell = one(cells, table="table1_mnist", row="100x240 tanh", method=method)
        assert cell["shortened"] and cell["mark"] == "†" and cell["ours_display"].endswith("n=1†")
    assert not one(cells, table="table1_mnist", row="100x240 tanh", method="dfa")["shortened"]
    out, _ = cli(tmp_path, "--format", "markdown", capsys=capsys)
    assert "† shortened runs, not the paper's protocol: trainer.max_epochs=30 (BP 100x240 tanh, FA 100x240 tanh)" in out


def test_whitened_inputs_make_an_mlp_run_another_experiment_but_are_the_conv_row_s_protocol(tmp_path, capsys):
    """The MLP rows take inputs in [0, 1], the conv rows ZCA (the author's README): a ZCA MLP run, or a
    conv run without ZCA, is another experiment, never the paper's cell."""
    write_cell(tmp_path, "mlp", [1.7])
    write_cell(tmp_path, "mlp_zca", [1.9], seed0=1, preprocess="zca")
    write_cell(tmp_path, "mlp_old", [1.8], seed0=2, drop=("preprocess",), hydra=False)   # before ZCA existed
    conv = dict(data="cifar10", model="conv", lr=5e-5, hidden=None, n_train=50000, init="zero")
    write_cell(tmp_path, "conv", [25.0], **conv, preprocess="zca")
    write_cell(tmp_path, "conv_raw", [30.0], seed0=1, **conv, preprocess="none")
    cells = csv_cells(tmp_path, capsys=capsys)
    assert one(cells, table="table1_mnist", row="2x800 tanh", method="dfa")["seeds"] == "0 2"
    assert one(cells, table="table2_cifar10", row="CONV tanh", method="dfa")["seeds"] == "0"
    other = cells[cells["table"] == "other_runs"]
    assert sorted(zip(other["data"], other["setting"])) == [("cifar10", "data.preprocess=none"),
                                                            ("mnist", "data.preprocess=zca")]


def test_another_rmsprop_eps_is_another_experiment(tmp_path, capsys):
    """RMSprop's eps is the author's 1e-8 in every paper cell; records from before it was recorded ran it."""
    write_cell(tmp_path, "mlp", [1.7], optim_eps=1e-8)
    write_cell(tmp_path, "mlp_old", [1.8], seed0=1, hydra=False)
    write_cell(tmp_path, "mlp_eps", [1.9], seed0=2, optim_eps=1e-8 / 64)
    cells = csv_cells(tmp_path, capsys=capsys)
    assert one(cells, table="table1_mnist", row="2x800 tanh", method="dfa")["seeds"] == "0 1"
    other = cells[cells["table"] == "other_runs"]
    assert list(other["setting"]) == ["optim.eps=1.5625e-10"]
