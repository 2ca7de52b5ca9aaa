"""Where a run's test error settles (dfa_cli/report/plateau.py), against numbers worked out by hand."""
from __future__ import annotations

import json
import math

import pytest

from dfa_cli.report.plateau import curve_facts, mean_std


def write_curve(folder, test, train):
    folder.mkdir(parents=True)
    rows = [{"epoch": i + 1, "test_error": t, "train_error": r} for i, (t, r) in enumerate(zip(test, train))]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_plateau_lowest_and_training_error_of_a_swinging_curve(tmp_path):
    run = write_curve(tmp_path / "r", test=[60.0, 50.0, 44.0, 49.0, 47.0, 51.0, 46.0],
                      train=[70.0, 40.0, 20.0, 9.0, 3.0, 2.5, 1.0])
    f = curve_facts(run, train_level=2.5, window=4)
    assert (f.epochs, f.last, f.window) == (7, 46.0, 4)
    assert f.plateau == pytest.approx((49 + 47 + 51 + 46) / 4)          # epochs 4–7: 48.25
    assert f.swing == pytest.approx((5 + 2 + 4 + 5) / 4)                # |49−44|, |47−49|, |51−47|, |46−51|
    assert (f.lowest, f.lowest_epoch, f.train_at_lowest, f.train_end) == (44.0, 3, 20.0, 1.0)
    assert f.reaches_train == 6                                         # 2.5 ≤ 2.5 at epoch 6, not before
    assert f.spikes == 0                                                # median 48: 51 is 3 above, not more


def test_a_spike_is_an_epoch_more_than_three_points_above_its_windows_median(tmp_path):
    run = write_curve(tmp_path / "r", test=[47.0, 46.0, 58.7, 46.5, 47.0, 50.1, 46.8], train=[1.0] * 7)
    f = curve_facts(run, window=6)                                      # epochs 2–7, median 46.9
    assert f.spikes == 2                                                # 58.7 and 50.1 (3.2 above); 47.0 is not
    assert f.swing == pytest.approx((1 + 12.7 + 12.2 + 0.5 + 3.1 + 3.3) / 6)
    assert (f.spike_epochs, f.spike_errors) == ((3, 6), (58.7, 50.1))
    # without them: 58.7 → (46.0 + 46.5) / 2, 50.1 → (47.0 + 46.8) / 2; the curve 47, 46, 46.25, 46.5, 47, 46.9, 46.8
    assert f.calm_swing == pytest.approx((1 + 0.25 + 0.25 + 0.5 + 0.1 + 0.1) / 6)


def test_without_its_spikes_a_run_takes_the_nearest_calm_epochs_on_either_side(tmp_path):
    run = write_curve(tmp_path / "r", test=[47.0, 47.2, 55.0, 56.0, 47.4, 47.0, 47.1, 60.0], train=[1.0] * 8)
    f = curve_facts(run, window=8)                                      # median 47.3: 55, 56 and 60 spike
    assert f.spikes == 3 and f.spike_epochs == (3, 4, 8)
    # 55 and 56 side by side both become (47.2 + 47.4) / 2; 60, the last epoch, its one calm neighbour's 47.1
    assert f.calm_swing == pytest.approx((0.2 + 0.1 + 0 + 0.1 + 0.4 + 0.1 + 0) / 7)

def test_a_short_run_averages_what_it_has_and_an_unreached_level_is_none(tmp_path):
    run = write_curve(tmp_path / "r", test=[3.0, 2.0, 2.0], train=[5.0, 4.0, 3.5])
    f = curve_facts(run, train_level=1.0)
    assert (f.window, f.plateau, f.lowest_epoch, f.reaches_train) == (3, pytest.approx(7 / 3), 2, None)
    assert f.swing == pytest.approx(0.5)                                 # the first epoch has none before it
    assert curve_facts(run).reaches_train is None


def test_a_run_without_an_epoch_is_refused_by_name(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(ValueError, match="no logged epoch"):
        curve_facts(tmp_path / "r")


def test_mean_and_sample_std():
    assert mean_std([1.0, 2.0, 4.0]) == (pytest.approx(7 / 3), pytest.approx(math.sqrt(7 / 3)))
    mean, std = mean_std([5.0])
    assert mean == 5.0 and math.isnan(std)


def test_the_markdown_gives_each_run_and_a_mean_row_only_for_a_cell_of_several_seeds(tmp_path):
    import pandas as pd
    from dfa_cli.report.plateau import plateau_markdown
    paths = {}
    for name, seed, test in (("bp_s0", 0, [50.0, 46.0]), ("bp_s1", 1, [48.0, 47.0]), ("dfa_s0", 0, [52.0, 49.0])):
        run = write_curve(tmp_path / name, test=test, train=[10.0, 2.0])
        (run / "summary.json").write_text(json.dumps({"seed": seed}))
        paths[name] = str(run)
    cells = pd.DataFrame([
        {"row": "1x1000 tanh", "method": "bp", "paths": [paths["bp_s1"], paths["bp_s0"]],
         "paper_train_error": 2.5, "paper_text": "45.1 ± 0.7 (2.5)"},
        {"row": "1x1000 tanh", "method": "dfa", "paths": [paths["dfa_s0"]],
         "paper_train_error": 1.0, "paper_text": "46.4 ± 0.4 (3.2)"}])
    lines = plateau_markdown(cells, "Table 2").splitlines()
    rows = [line for line in lines if line.startswith("| BP") or line.startswith("| DFA") or line.startswith("| **")]
    assert rows == [
        "| BP, seed 0 | 46.00 | 48.00 | 4.00 | 46.00 (2) | 2.00; 2.00 | 2 |  |",     # seeds in order, whatever the paths'
        "| BP, seed 1 | 47.00 | 47.50 | 1.00 | 47.00 (2) | 2.00; 2.00 | 2 |  |",
        "| **BP, n=2** | **46.50 ± 0.71** | **47.75 ± 0.35** | 2.50 ± 2.12 | **46.50 ± 0.71** | 2.00 ± 0.00; 2.00 ± 0.00 | | "
        "45.1 ± 0.7 (2.5) |",
        "| DFA, seed 0 | 49.00 | 50.50 | 3.00 | 49.00 (2) | 2.00; 2.00 | not reached | 46.4 ± 0.4 (3.2) |"]
    from dfa_cli.report.plateau import noise_markdown
    assert noise_markdown(cells).splitlines()[:3] == [
        "| Model | BP | DFA |", "|---|---|---|", "| 1x1000 tanh | 47.75, swing 2.50, spikes 0 (n=2) | 50.50, swing 3.00, spikes 0 (n=1) |"]
    assert lines[0].startswith("Table 2: every full-protocol run") and lines.count("**1x1000 tanh**") == 1
