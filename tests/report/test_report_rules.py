"""The every-rule table (dfa_cli/report/rules.py, issue 48): which runs fill a (net, rule) cell, its
numbers by hand, the starts it names, and its two figures; the campaign's plan for it."""
from __future__ import annotations

import json

import pytest

from dfa_cli.campaign import plans
from dfa_cli.report import rules

from conftest import compose_config
from test_report import write_run


def _run(root, name, method="dfa", seed=0, test_error=1.8, **fields):
    return write_run(root / name, method=method, seed=seed, test_error=test_error, **fields)


def test_a_cell_holds_the_protocol_runs_of_its_rule_on_the_summed_step(tmp_path):
    _run(tmp_path, "dfa0", test_error=1.70, train_error=0.01, init="zero")
    _run(tmp_path, "dfa1", seed=1, test_error=1.80, train_error=0.03, init="zero")
    _run(tmp_path, "binary0", test_error=1.90, feedback="binary", init="zero")
    _run(tmp_path, "sparse0", test_error=4.00, density=0.1, init="zero")
    _run(tmp_path, "usf0", method="usf", test_error=1.60, init="uniform")
    _run(tmp_path, "mean-step", seed=2, test_error=9.0, loss_reduction="mean")          # the other step: out
    _run(tmp_path, "adam", seed=3, test_error=9.0, optimizer="adam")                     # another setting: out
    _run(tmp_path, "scaled", test_error=9.0, density=0.1, feedback_scale="source")       # not the paper's scale: out
    _run(tmp_path, "cifar", model="fc1000x3", data="cifar10", test_error=46.0, hidden=[1000] * 3,
         n_train=50000, init="zero")
    runs = rules.collect_rules([tmp_path])
    got = {(r.net, r.rule, r.seed): r.test_error for r in runs.itertuples()}
    assert got == {("MNIST 2x800 tanh", "dfa", 0): 1.70, ("MNIST 2x800 tanh", "dfa", 1): 1.80,
                   ("MNIST 2x800 tanh", "dfa-binary", 0): 1.90, ("MNIST 2x800 tanh", "dfa-sparse", 0): 4.00,
                   ("MNIST 2x800 tanh", "usf", 0): 1.60, ("CIFAR-10 3x1000 tanh", "dfa", 0): 46.0}
    table = rules.table_markdown(runs)
    row = next(line for line in table.splitlines() if line.startswith("| MNIST 2x800 tanh"))
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert len(cells) == 11 and cells[0] == "—"                                         # no BP run
    assert cells[2] == "1.75 ± 0.07 (0.02) n=2"       # mean 1.75, std √((0.05² + 0.05²)/1) = 0.0707
    assert cells[6] == "1.60 (0.00) n=1" and cells[9] == "1.90 (0.00) n=1" and cells[10] == "4.00 (0.00) n=1"
    assert "uSF: U(±1/√fan_in)" in table and "DFA, DFA binary, sparse DFA: all layers at zero" in table


def test_the_figures_draw_the_errors_and_the_last_epochs_alignment(tmp_path):
    records = tmp_path / "records"
    for i, (method, error) in enumerate((("bp", 1.6), ("dfa", 1.7), ("shallow", 2.5))):
        run = _run(records, method, method=method, test_error=error)
        lines = (run / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1])
        angles = [None, None] if method == "shallow" else [10.0 * (i + 1), 20.0]
        last["alignment"] = {"delta_angle": angles, "weight_angle": angles, "measurements": 3}
        (run / "metrics.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
    runs = rules.collect_rules([records])
    assert rules.last_alignment(runs.loc[runs["rule"] == "dfa", "path"].iloc[0]) == [20.0, 20.0]
    assert rules.draw_errors(runs, tmp_path / "e.png").stat().st_size > 1000
    assert rules.draw_alignment(runs, tmp_path / "a.png").stat().st_size > 1000
    assert rules.draw_alignment(runs, tmp_path / "none.png", net="MNIST 7x240 tanh") is None


def test_the_rules_plan_runs_each_cell_once_and_measures_2x800_seed0():
    jobs = {j.name: j for j in plans.rule_jobs([0, 1, 2])}
    assert len(jobs) == 2 * 10 * 3 + 8       # 2x800 and 7x240: 10 rules × 3 seeds; CIFAR-10: 8 rules × seed 0
    assert "rules/mnist_fc800x2_tanh_dfa_s0" not in jobs and "rules/mnist_fc240x7_tanh_bp_s0" not in jobs
    assert not any(name.startswith("rules/cifar10_fc1000x3_tanh_" + m + "_") for name in jobs for m in ("bp_", "fa_", "dfa_s"))
    assert {j.stage for n, j in jobs.items() if "mnist" in n} == {3} and {j.stage for n, j in jobs.items() if "cifar10" in n} == {5}
    aligned = {n for n, j in jobs.items() if "diagnostics.alignment=true" in j.overrides}
    assert aligned == {f"rules/mnist_fc800x2_tanh_{r}_s0" for r in plans.RULES if r != "dfa"}
    measured = {j.name: j for j in plans.summed_step_jobs([0, 1, 2])}
    assert "diagnostics.alignment=true" in measured["mnist-summed-step/fc800x2_tanh_dfa_s0"].overrides
    for name in ("rules/mnist_fc240x7_tanh_dfa-sparse_s1", "rules/cifar10_fc1000x3_tanh_dfa-binary_s0"):
        cfg = compose_config(*jobs[name].overrides)
        assert cfg.loss.reduction == "sum" and cfg.method.name == "dfa"
        assert (cfg.method.density, cfg.method.feedback) == ((0.1, "uniform") if "sparse" in name else (1.0, "binary"))


@pytest.mark.parametrize("rule", list(plans.RULES))
def test_every_rule_of_the_plan_is_a_column_of_the_table(rule):
    overrides = dict(o.split("=", 1) for o in plans.RULES[rule])
    summary = {"method": overrides["method"], "feedback": overrides.get("method.feedback", "uniform"),
               "density": float(overrides.get("method.density", 1.0))}
    assert rules.rule_of(summary) == rule


def test_each_rule_is_set_against_bp_over_the_seeds_both_ran(tmp_path):
    """Rule − BP per matched seed, mean and 95 % t-interval, by hand: DRTP − BP = 2.4, 2.6, 2.4
    → mean 2.4667, sd 0.11547, half-width t(0.975, 2) · sd/√3 = 4.3027 · 0.066667 = 0.2868."""
    for seed, (bp, drtp) in enumerate(((1.60, 4.00), (1.70, 4.30), (1.80, 4.20))):
        _run(tmp_path, f"bp{seed}", method="bp", seed=seed, test_error=bp)
        _run(tmp_path, f"drtp{seed}", method="drtp", seed=seed, test_error=drtp)
    _run(tmp_path, "usf0", method="usf", seed=0, test_error=1.55)
    _run(tmp_path, "usf1", method="usf", seed=1, test_error=1.75)      # −0.05, +0.05: mean 0, half 12.706 · 0.05
    _run(tmp_path, "fa1", method="fa", seed=1, test_error=1.80)        # one pair: no interval
    _run(tmp_path, "shallow3", method="shallow", seed=3, test_error=8.0)   # no BP run of seed 3: no pair
    table = rules.paired_markdown(rules.collect_rules([tmp_path]))
    header, _, row, *rest = table.splitlines()
    columns = [c.strip() for c in header.split("|")[2:-1]]
    cells = dict(zip(columns, (c.strip() for c in row.split("|")[2:-1])))
    assert row.startswith("| MNIST 2x800 tanh") and len(columns) == 10 and "BP − BP" not in columns
    assert cells["DRTP − BP"] == "+2.47 [+2.18, +2.75] higher n=3"
    assert cells["uSF − BP"] == "+0.00 [-0.64, +0.64] n=2"
    assert cells["FA − BP"] == "+0.10 n=1" and cells["shallow − BP"] == "—" and cells["DFA − BP"] == "—"
    assert all(set(line.split("|")[2:-1]) == {" — "} for line in rest[:2])   # 7x240, CIFAR-10: no runs
