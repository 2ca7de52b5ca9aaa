"""The validation searches (dfa_cli/campaign/searches.py): each candidate's best window, the choice,
and what the candidates train."""
from __future__ import annotations

import json

import pytest

from dfa_cli.campaign.searches import SEARCHES

from conftest import compose_config, load_script

DFA_SEARCH = SEARCHES["dropout-search"]


def write_search_curve(records, search, name, errors, done=True):
    """A candidate's record as the campaign leaves it: its validation curve, and its summary once done."""
    folder = records / search.folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    folder.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"epoch": i + 1, "val_error": e, "train_error": e + 1}) + "\n" for i, e in enumerate(errors)))
    if done:
        folder.joinpath("summary.json").write_text(json.dumps({"stop_reason": "max_epochs"}))


def test_search_summary_finds_each_candidates_best_window(tmp_path):
    """The validation curve's best 5-epoch mean, by hand on a made-up curve."""
    write_search_curve(tmp_path, DFA_SEARCH, "step50", [5.0, 4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 4.0], done=False)
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
        write_search_curve(tmp_path, DFA_SEARCH, name, [3.0] * 10, done=name != "step50")
    write_search_curve(tmp_path, DFA_SEARCH, "lr3e-4_step100", [3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 3.0])
    assert DFA_SEARCH.choice(DFA_SEARCH.summary(tmp_path)) is None       # step50 still running
    write_search_curve(tmp_path, DFA_SEARCH, "step50", [2.9] * 10)                    # flat: the earliest window wins the tie
    choice = DFA_SEARCH.choice(DFA_SEARCH.summary(tmp_path))
    assert choice["candidate"] == "lr3e-4_step100" and choice["best_window_end_epoch"] == 7
    assert choice["settings"] == {"optim.lr": 3e-4, "trainer.lr_schedule": "step",
                                  "trainer.lr_step_epochs": 100, "trainer.max_epochs": 7}
    write_search_curve(tmp_path, DFA_SEARCH, "lr3e-4_step100", [3.0] * 10)
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


def test_a_second_search_says_whether_it_chose_what_its_row_runs(tmp_path):
    """FA's own search of a dropout row is set against DFA's, whose choice the row runs."""
    search_table = load_script("reproduction_tables").search_table
    row, fa = SEARCHES["cifar10-dropout-search"], SEARCHES["cifar10-fa-dropout-search"]
    for name in fa.candidates:
        write_search_curve(tmp_path, fa, name, [2.0] * 10 if name == "lr3e-4" else [3.0] * 10)
    assert "**lr3e-4**" in search_table(tmp_path, "cifar10-fa-dropout-search", "### FA")
    assert "the row's own search (DFA) has not chosen yet" in search_table(tmp_path, "cifar10-fa-dropout-search", "h")
    for name in row.candidates:
        write_search_curve(tmp_path, row, name, [2.0] * 10 if name == "constant" else [3.0] * 10)
    text = search_table(tmp_path, "cifar10-fa-dropout-search", "### FA")
    assert "not the same LR and schedule as the row's choice (DFA's **constant**)" in text
    write_search_curve(tmp_path, fa, "constant", [1.0] * 10)
    text = search_table(tmp_path, "cifar10-fa-dropout-search", "### FA")
    assert "**constant**" in text and "the same LR and schedule as the row's choice (DFA's **constant**)" in text
