"""The paper's campaign plans (dfa_cli/campaign/plans.py): which jobs, in which order (the searches
themselves: test_searches.py)."""
from __future__ import annotations

import json
import re

import pytest

from dfa_cli.campaign import plans
from dfa_cli.campaign.plans import campaign_jobs, table1_jobs, table2_jobs
from dfa_cli.campaign.searches import DROPOUT_SEARCH, SEARCHES

from conftest import REPO, compose_config, load_script
from test_searches import write_search_curve

DFA_SEARCH = SEARCHES["dropout-search"]
OWN_SEARCHES = {m: SEARCHES[f"{m}-dropout-search"] for m in ("fa", "bp")}   # FA's and BP's own
T1_SEARCHES = len(DFA_SEARCH.candidates) + sum(len(s.candidates) for s in OWN_SEARCHES.values())


def test_table1_plan_orders_seed_0_of_every_cell_first_cheapest_first():
    jobs = table1_jobs([0, 1, 2, 3, 4])
    names = [j.name for j in jobs]
    first_pass = 28 + 2 + len(DFA_SEARCH.candidates)       # 30 cells (100x240 BP/FA bounded) + the search
    assert [j.seeds[0] for j in jobs[:first_pass]] == [0] * first_pass
    assert {j.stage for j in jobs[:first_pass]} == {0}
    costs = [j.cost for j in jobs[:first_pass]]
    assert costs == sorted(costs)
    assert all(n.startswith("mnist-validation/") for n in names[:len(DFA_SEARCH.candidates)])   # it gates a row
    assert names[len(DFA_SEARCH.candidates)].startswith("mnist/fc800x1_tanh_")
    assert names[first_pass - 1] == "mnist/fc240x100_tanh_dfa_s0"
    phase1 = [j for j in jobs if j.stage == 1]                       # what settles the ⚑ cells
    own_searches = [j for j in phase1 if j.name.startswith("mnist-validation/")]
    for method, search in OWN_SEARCHES.items():
        mine = [j for j in own_searches if j.name.endswith(f"_{method}_s0")]
        assert len(mine) == len(search.candidates)
        assert all(f"method={method}" in j.overrides and "data.split=validation" in j.overrides for j in mine)
    assert len(own_searches) == sum(len(s.candidates) for s in OWN_SEARCHES.values())
    early = {j.name for j in phase1} - {j.name for j in own_searches}
    assert early == {f"mnist/{row}_{m}_s{s}" for row, m in plans.FLAGGED_ON_ONE_SEED["table1"] for s in (1, 2)}
    rest = [j for j in jobs if j.stage > 1]
    assert {j.seeds[0] for j in rest[:2 * 28 - len(early)]} == {1, 2}
    assert {j.seeds[0] for j in rest[2 * 28 - len(early):]} == {3, 4}
    deep_bp = next(j for j in jobs if j.name == "mnist/fc240x100_tanh_bp_s0")
    assert "trainer.max_epochs=30" in deep_bp.overrides
    assert not any(j.name.startswith("mnist/fc240x100_tanh_bp_s1") for j in jobs)   # one seed only
    search = [j for j in jobs if j.name.startswith("mnist-validation/")]
    assert len(search) == T1_SEARCHES and all("data.split=validation" in j.overrides for j in search)


def test_table2_plan_seed0_of_the_mlp_cells_first_then_seeds_1_2_search_dropout_and_conv_rows():
    """On the author's summed step: the six MLP cells without dropout, seed 0, come first (phase 1);
    seeds 1–2, the dropout search, the dropout row and the bounded conv row come with phase 4."""
    jobs = table2_jobs([0, 1, 2])
    names = [j.name for j in jobs]
    assert len(set(names)) == len(names)
    phase1 = {j.name for j in jobs if j.stage == 1}
    assert phase1 == {f"cifar10/{row}_{m}_s0" for row in ("fc1000x1_tanh", "fc1000x3_tanh") for m in ("bp", "fa", "dfa")}
    phase4 = [j for j in jobs if j.stage == 4]
    searches = [j for j in phase4 if j.name.startswith("cifar10-validation/fc1000x3_tanh_dropout_")]
    assert len(searches) == len(SEARCHES["cifar10-dropout-search"].candidates)   # DFA's: it sets the row
    assert all(j.name.endswith("_dfa_s0") and "data.split=validation" in j.overrides for j in searches)
    assert {j.name for j in phase4 if j.name.startswith("cifar10/")} == {
        f"cifar10/{row}_{m}_s{s}" for row in ("fc1000x1_tanh", "fc1000x3_tanh", "fc1000x3_tanh_dropout")
        for m in ("bp", "fa", "dfa") for s in (0, 1, 2) if s or row.endswith("dropout")} | {
        f"cifar10/conv_tanh_{m}_s0" for m in ("bp", "fa", "dfa")}
    assert {j.stage for j in jobs} == {1, 4}
    conv = [j for j in jobs if "conv_tanh" in j.name]
    assert len(conv) == 3 and all(f"trainer.max_epochs={plans.CONV_BOUNDED_EPOCHS}" in j.overrides for j in conv)
    assert [j.stage for j in jobs] == sorted(j.stage for j in jobs)
    on_gpu = table2_jobs([0, 1, 2, 3, 4], stacked=True)
    conv_gpu = [j for j in on_gpu if "conv_tanh" in j.name]
    assert conv_gpu and not any("trainer.max_epochs" in o for j in conv_gpu for o in j.overrides)
    assert {j.seeds for j in conv_gpu} == {(0,), (1, 2), (3, 4)}


def test_table1s_measurement_on_the_summed_step_comes_between_table2s_seed0_and_the_rest():
    jobs = campaign_jobs(["table1", "table2", "summed-step"], [0, 1, 2])
    measured = [j for j in jobs if j.name.startswith("mnist-summed-step/")]
    assert sorted(j.name for j in measured) == sorted(
        f"mnist-summed-step/{row}_{m}_s{s}" for row, m in (("fc800x2_tanh", "dfa"), ("fc240x7_tanh", "bp"),
                                                           ("fc800x2_tanh_dropout", "dfa"), ("fc800x4_tanh", "fa"))
        for s in (0, 1, 2))
    assert {j.stage for j in measured} == {2}
    for job in measured:   # the row's own preset, the default (summed) step: the table's protocol
        cfg = compose_config(*job.overrides)
        assert cfg.loss.reduction == "sum" and cfg.method.name == job.name.split("_")[-2]
    first = {j.name.split("/")[0]: i for i, j in reversed(list(enumerate(jobs)))}
    t2_seed0 = max(i for i, j in enumerate(jobs) if j.name.startswith("cifar10/") and j.stage == 1)
    t2_later = min(i for i, j in enumerate(jobs) if j.name.startswith("cifar10") and j.stage == 4)
    assert t2_seed0 < first["mnist-summed-step"] < t2_later


def test_one_campaign_runs_table2_before_table1s_later_seeds():
    jobs = campaign_jobs(["table1", "table2", "figures"], [0, 1, 2])
    stages = [j.stage for j in jobs]
    assert stages == sorted(stages)
    first_t1_seed1 = next(i for i, j in enumerate(jobs) if j.name.startswith("mnist/") and j.seeds == (1,)
                          and j.stage > 1)   # (the ⚑ cells' seeds 1-2 come in phase 1)
    assert all(j.stage <= 2 for j in jobs[:first_t1_seed1])
    assert {j.name for j in jobs if j.stage == 2} <= {j.name for j in jobs[:first_t1_seed1]}
    figures = [j for j in jobs if j.name.startswith("mnist-figures/")]
    assert len(figures) == 4 and {j.stage for j in figures} == {0}
    names = [j.name for j in campaign_jobs(["table2", "cifar10-dropout-search"], [0])]
    assert len(names) == len(set(names))                                   # a search named twice runs once


def test_the_figure_runs_are_the_documented_commands():
    jobs = {j.name: j for j in plans.figure_jobs()}
    tsne = compose_config(*jobs["mnist-figures/fc400x3_tanh_tsne_dfa_s0"].overrides)
    assert tsne.diagnostics.features and tsne.model.name == "fc400x3" and tsne.method.name == "dfa"
    align = compose_config(*jobs["mnist-figures/fc800x3_tanh_alignment_fa_s0"].overrides)
    assert align.diagnostics.alignment and align.model.name == "fc800x3" and align.trainer.max_epochs == 300


@pytest.mark.parametrize("plan,preset", [("table1", "fc800x2_tanh_dropout"), ("table2", "fc1000x3_tanh_dropout")])
def test_the_dropout_row_waits_until_its_preset_names_the_chosen_schedule(tmp_path, monkeypatch, plan, preset):
    (tmp_path / plan).mkdir()
    path = tmp_path / plan / f"{preset}.yaml"
    path.write_text("# @package _global_\ndropout:\n  input: 0.1\ntrainer:\n  max_epochs: 300\n")
    monkeypatch.setattr(plans, "PRESETS", tmp_path)
    jobs = plans.PLANS[plan]([0])
    dropout = [j for j in jobs if preset in j.name and "-validation/" not in j.name]
    assert len(dropout) == 3 and all(j.waits_for and "validation" in j.waits_for for j in dropout)
    assert not any(j.waits_for for j in jobs if preset not in j.name or "-validation/" in j.name)
    path.write_text("# @package _global_\ntrainer:\n  lr_schedule: step\n")
    search = SEARCHES[DROPOUT_SEARCH[plan]]
    monkeypatch.setattr(plans, "RECORDS", tmp_path / "records")   # the search run again: not finished
    for name in search.candidates:
        write_search_curve(tmp_path / "records", search, name, [3.0] * 10, done=name != list(search.candidates)[-1])
    still = [j for j in plans.PLANS[plan]([0]) if j.waits_for]
    assert len(still) == 3 and all("has records to finish first" in j.waits_for for j in still)
    write_search_curve(tmp_path / "records", search, list(search.candidates)[-1], [3.0] * 10)
    assert all(j.waits_for is None for j in plans.PLANS[plan]([0]))


def test_reproduce_status_and_summary_run_without_training(tmp_path, capsys):
    reproduce = load_script("reproduce").main
    env_state = ["--state", str(tmp_path / "state"), "--records", str(tmp_path / "records")]
    reproduce(["all", "--status", "--seeds", "0", *env_state])
    out = capsys.readouterr().out
    assert "cifar10/conv_tanh_dfa_s0" in out and "mnist-figures/" in out
    assert "0/" in out.splitlines()[-1]
    by_folder = out.splitlines()[-2]   # every planned record counted once, under its folder
    counts = re.findall(r"(\S+) (\d+)/(\d+) \(([\d.]+) h to go\)", by_folder)
    assert by_folder.startswith("by folder: ") and {"mnist", "cifar10", "rules"} <= {c[0] for c in counts}
    total = int(out.splitlines()[-1].split(" records done")[0].split("/")[1])
    assert sum(int(c[2]) for c in counts) == total and all(c[1] == "0" and float(c[3]) > 0 for c in counts)
    reproduce(["table2", "--summary", *env_state])
    summary = json.loads(capsys.readouterr().out)
    assert list(summary) == ["cifar10-dropout-search", "cifar10-fa-dropout-search"]
    assert all(summary[name]["choice"] is None for name in summary)


def test_the_experiments_train_the_flagged_cells_as_their_paragraphs_say():
    jobs = plans.experiment_jobs()
    nostop = [j for j in jobs if "relu_bp_nostop" in j.name]
    uniform = [j for j in jobs if "fc800x4_tanh_fa_uniform" in j.name]
    control = [j for j in jobs if j.name.startswith("mnist-experiments/") and "_fa_uniform" in j.name
               and "fc800x4" not in j.name]
    dropout_uniform = [j for j in jobs if "fc1000x3_tanh_dropout_fa_uniform" in j.name]
    zca = [j for j in jobs if "fc1000x1_tanh_zca" in j.name]
    halved_lr = [j for j in jobs if "fc1000x1_tanh_lr5e-5" in j.name]
    standardized = [j for j in jobs if "fc1000x1_tanh_simple" in j.name]
    summed = [j for j in jobs if "fc1000x1_tanh_eps" in j.name]
    started_at_one = [j for j in jobs if "fc1000x1_tanh_summed-m1" in j.name]
    alignment = [j for j in jobs if "_fa_alignment" in j.name]
    own_choice = [j for j in jobs if "dropout_bp_own-choice" in j.name]
    assert len(nostop) + len(uniform) + len(control) + len(dropout_uniform) + len(zca) + len(halved_lr) \
        + len(standardized) + len(summed) + len(started_at_one) + len(alignment) + len(own_choice) == len(jobs)
    # BP's dropout cell on BP's own search's choice: the row's preset, but for what that search chose
    search = SEARCHES["bp-dropout-search"]
    choice = search.choice(search.summary(REPO / "results" / "paper"))
    assert choice is not None and choice["candidate"] == "lr3e-4"
    assert [j.seeds for j in own_choice] == [(0,), (1,), (2,)]
    for job in own_choice:
        cfg, cell = compose_config(*job.overrides), compose_config(*job.overrides[:2])
        assert (cfg.optim.lr, cfg.trainer.lr_schedule, cfg.trainer.max_epochs) == (
            choice["settings"]["optim.lr"], choice["settings"]["trainer.lr_schedule"], choice["settings"]["trainer.max_epochs"])
        assert (cell.trainer.lr_schedule, cell.trainer.max_epochs) == ("step", 300)
        cfg.optim.lr, cfg.trainer.lr_schedule, cfg.trainer.max_epochs = cell.optim.lr, cell.trainer.lr_schedule, 300
        assert cfg == cell
    for job in alignment:           # the cell's protocol, measured, up to a bounded epoch
        cfg, cell = compose_config(*job.overrides), compose_config(*job.overrides[:2])
        assert job.name.startswith(f"{cfg.data.name}-experiments/")
        assert (cfg.diagnostics.alignment, cell.diagnostics.alignment, cfg.trainer.max_epochs) == (
            True, False, plans.ALIGNMENT_EPOCHS)
        assert cell.trainer.max_epochs > plans.ALIGNMENT_EPOCHS
        cfg.diagnostics.alignment, cfg.trainer.max_epochs = False, cell.trainer.max_epochs
        assert cfg == cell
    assert sorted((cfg.data.name, cfg.dropout.hidden > 0) for cfg in (compose_config(*j.overrides) for j in alignment)
                  ) == [("cifar10", False), ("cifar10", True), ("mnist", False), ("mnist", True)]
    assert [j.seeds for j in dropout_uniform] == [(0,)]
    assert {j.stage for j in jobs if j not in control} == {1}
    # the uniform-start control: seed 0 settles with the ⚑ cells, seeds 1–2 go with Table 1's seeds
    assert sorted((j.name.split("/")[1], j.stage) for j in control) == [
        (f"{row}_fa_uniform_s{s}", 1 if s == 0 else plans.SEED_PHASE["table1"][s])
        for row in ("fc800x2_tanh", "fc800x3_tanh") for s in (0, 1, 2)]
    for job in control + uniform + dropout_uniform:      # the cell's protocol, but for the start
        cfg, cell = compose_config(*job.overrides), compose_config(*job.overrides[:2])
        assert (cfg.method.name, cfg.init.name, cell.init.name) == ("fa", "uniform", "paper")
        cfg.init, cell.init = None, None
        assert cfg == cell
    for job in halved_lr:                                # the cell's protocol, but for the LR
        cfg, cell = compose_config(*job.overrides), compose_config(*job.overrides[:2])
        assert (cfg.optim.lr, cell.optim.lr) == (5e-5, 1e-4)
        cfg.optim.lr = cell.optim.lr
        assert cfg == cell
    for job in standardized:                             # the cell's protocol, but for the inputs
        cfg, cell = compose_config(*job.overrides), compose_config(*job.overrides[:2])
        assert (cfg.data.preprocess, cell.data.preprocess, job.seeds) == ("simple", "none", (0,))
        cfg.data.preprocess = cell.data.preprocess
        assert cfg == cell
    assert sorted(compose_config(*j.overrides).method.name for j in standardized) == ["bp", "dfa"]
    for job in summed:                                   # the cell's protocol, but for RMSprop's eps
        cfg, cell = compose_config(*job.overrides), compose_config(*job.overrides[:2])
        assert cfg.optim.eps * 64 == pytest.approx(cell.optim.eps, rel=1e-12) and cell.optim.eps == 1e-8
        cfg.optim.eps = cell.optim.eps
        assert cfg == cell
    for job in started_at_one:                           # ... and for eps and where RMSprop's mean of g² starts
        cfg, cell = compose_config(*job.overrides), compose_config(*job.overrides[:2])
        assert (cfg.optim.initial_mean * 64**2, cell.optim.initial_mean) == (pytest.approx(1.0, rel=1e-12), 0.0)
        assert cfg.optim.eps * 64 == pytest.approx(cell.optim.eps, rel=1e-12) and job.seeds == (0,)
        cfg.optim.eps, cfg.optim.initial_mean = cell.optim.eps, cell.optim.initial_mean
        assert cfg == cell
    assert sorted(compose_config(*j.overrides).method.name for j in started_at_one) == ["bp", "dfa"]
    assert sorted(j.name for j in summed) == [f"cifar10-experiments/fc1000x1_tanh_eps1.5625e-10_{m}_s0"
                                              for m in ("bp", "dfa")]
    cfg = compose_config(*zca[0].overrides)
    assert (cfg.data.name, cfg.data.preprocess, compose_config("experiment=table2/fc1000x1_tanh").data.preprocess
            ) == ("cifar10", "zca", "none")
    for group in (nostop, uniform):
        assert [j.seeds for j in group] == [(0,), (1,), (2,)]
    cfg = compose_config(*nostop[0].overrides)
    assert (cfg.model.activation, cfg.method.name, cfg.trainer.stop_train_error, cfg.trainer.max_epochs) == (
        "relu", "bp", 0, 100)
    assert set(j.name for j in jobs) <= set(j.name for j in campaign_jobs(["experiments"], [0]))
