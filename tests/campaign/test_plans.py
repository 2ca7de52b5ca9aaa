"""The paper's campaign plans (dfa_cli/campaign/plans.py): which jobs, in which order, and the validation searches."""
from __future__ import annotations

import json

import pytest

from dfa_cli.campaign import plans
from dfa_cli.campaign.plans import SEARCHES, campaign_jobs, table1_jobs, table2_jobs

from conftest import REPO, compose_config, load_script

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
    search = SEARCHES[plans.DROPOUT_SEARCH[plan]]
    monkeypatch.setattr(plans, "RECORDS", tmp_path / "records")   # the search run again: not finished
    for name in search.candidates:
        _curve(tmp_path / "records", search, name, [3.0] * 10, done=name != list(search.candidates)[-1])
    still = [j for j in plans.PLANS[plan]([0]) if j.waits_for]
    assert len(still) == 3 and all("has records to finish first" in j.waits_for for j in still)
    _curve(tmp_path / "records", search, list(search.candidates)[-1], [3.0] * 10)
    assert all(j.waits_for is None for j in plans.PLANS[plan]([0]))


def _curve(records, search, name, errors, done=True):
    folder = records / search.folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    folder.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"epoch": i + 1, "val_error": e, "train_error": e + 1}) + "\n" for i, e in enumerate(errors)))
    if done:
        folder.joinpath("summary.json").write_text(json.dumps({"stop_reason": "max_epochs"}))


def test_search_summary_finds_each_candidates_best_window(tmp_path):
    """The validation curve's best 5-epoch mean, by hand on a made-up curve."""
    _curve(tmp_path, DFA_SEARCH, "step50", [5.0, 4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 4.0], done=False)
    rows = {r["candidate"]: r for r in DFA_SEARCH.summary(tmp_path)}   # best window: epochs 5..9, mean 1.0
    step50 = rows["step50"]
    assert step50["state"] == "running" and step50["epochs"] == 11
    assert step50["best_window_val_error"] == pytest.approx(1.0) and step50["best_window_end_epoch"] == 9
    assert step50["final_val_error"] == 4.0 and step50["best_single_val_error"] == 1.0
    assert rows["constant"]["state"] == "not finished"


def test_search_choice_takes_the_lowest_window_once_every_candidate_is_done(tmp_path):
    """Nothing is chosen while a candidate runs; then the lowest best-window error wins, and training
    time is where its window ends."""
    for name in DFA_SEARCH.candidates:
        _curve(tmp_path, DFA_SEARCH, name, [3.0] * 10, done=name != "step50")
    _curve(tmp_path, DFA_SEARCH, "lr3e-4_step100", [3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 3.0])
    assert DFA_SEARCH.choice(DFA_SEARCH.summary(tmp_path)) is None       # step50 still running
    _curve(tmp_path, DFA_SEARCH, "step50", [2.9] * 10)                    # flat: the earliest window wins the tie
    choice = DFA_SEARCH.choice(DFA_SEARCH.summary(tmp_path))
    assert choice["candidate"] == "lr3e-4_step100" and choice["best_window_end_epoch"] == 7
    assert choice["settings"] == {"optim.lr": 3e-4, "trainer.lr_schedule": "step",
                                  "trainer.lr_step_epochs": 100, "trainer.max_epochs": 7}
    _curve(tmp_path, DFA_SEARCH, "lr3e-4_step100", [3.0] * 10)
    choice = DFA_SEARCH.choice(DFA_SEARCH.summary(tmp_path))
    assert choice["candidate"] == "step50"
    assert choice["settings"] == {"optim.lr": 1e-4, "trainer.lr_schedule": "step", "trainer.lr_step_epochs": 50,
                                  "trainer.max_epochs": 5}


@pytest.mark.parametrize("key", list(SEARCHES))
def test_search_candidates_pin_the_protocol_defaults_whatever_the_preset_chose(key):
    """Rerun after the preset names its choice, the candidates must still train what they name."""
    search = SEARCHES[key]
    for name, job in zip(search.candidates, search.jobs()):
        cfg = compose_config(*job.overrides)
        want = search.settings(name)
        assert cfg.optim.lr == float(want["optim.lr"]) and cfg.trainer.lr_schedule == want["trainer.lr_schedule"]
        assert cfg.trainer.max_epochs == int(want["trainer.max_epochs"])
        assert cfg.data.split == "validation" and cfg.method.name == search.method
        assert cfg.data.name == search.data and cfg.dropout.name == "paper"
    fast = compose_config(*SEARCHES["dropout-search"].jobs()[-1].overrides)
    assert (fast.optim.lr, fast.trainer.lr_schedule, fast.trainer.lr_step_epochs) == (3e-4, "step", 100)


def test_reproduce_status_and_summary_run_without_training(tmp_path, capsys):
    reproduce = load_script("reproduce").main
    env_state = ["--state", str(tmp_path / "state"), "--records", str(tmp_path / "records")]
    reproduce(["all", "--status", "--seeds", "0", *env_state])
    out = capsys.readouterr().out
    assert "cifar10/conv_tanh_dfa_s0" in out and "mnist-figures/" in out
    assert "0/" in out.splitlines()[-1]
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


def test_a_second_search_says_whether_it_chose_what_its_row_runs(tmp_path):
    """FA's own search of a dropout row is set against DFA's, whose choice the row runs."""
    search_table = load_script("reproduction").search_table
    row, fa = SEARCHES["cifar10-dropout-search"], SEARCHES["cifar10-fa-dropout-search"]
    for name in fa.candidates:
        _curve(tmp_path, fa, name, [2.0] * 10 if name == "lr3e-4" else [3.0] * 10)
    assert "**lr3e-4**" in search_table(tmp_path, "cifar10-fa-dropout-search", "### FA")
    assert "the row's own search (DFA) has not chosen yet" in search_table(tmp_path, "cifar10-fa-dropout-search", "h")
    for name in row.candidates:
        _curve(tmp_path, row, name, [2.0] * 10 if name == "constant" else [3.0] * 10)
    text = search_table(tmp_path, "cifar10-fa-dropout-search", "### FA")
    assert "not the same LR and schedule as the row's choice (DFA's **constant**)" in text
    _curve(tmp_path, fa, "constant", [1.0] * 10)
    text = search_table(tmp_path, "cifar10-fa-dropout-search", "### FA")
    assert "**constant**" in text and "the same LR and schedule as the row's choice (DFA's **constant**)" in text
