"""The every-rule findings (scripts/reproduction_findings.py): their numbers come from the records,
they cite only whole cells, and a claim the records no longer bear stops the block with one sentence."""
from __future__ import annotations

import json
import math
import shutil
import sys

import pytest

from conftest import REPO, load_script

RECORDS = REPO / "results" / "paper"
pytestmark = pytest.mark.skipif(not (RECORDS / "rules").is_dir(), reason="no committed every-rule records yet")


@pytest.fixture(scope="module")
def findings():
    return load_script("reproduction_findings")


@pytest.fixture()
def drtp_and_dfa(tmp_path):
    """2x800: DRTP's seeds 0–1 (its cell not whole) and DFA's 0–2, copied from the committed records."""
    for s in (0, 1):
        shutil.copytree(RECORDS / "rules" / f"mnist_fc800x2_tanh_drtp_s{s}", tmp_path / "rules" / f"drtp_s{s}")
    for s in (0, 1, 2):
        shutil.copytree(RECORDS / "mnist-summed-step" / f"fc800x2_tanh_dfa_s{s}", tmp_path / "rules" / f"dfa_s{s}")
    return tmp_path


def test_a_finding_cannot_cite_a_cell_before_it_has_all_its_seeds(findings, drtp_and_dfa):
    facts = findings.RuleFacts(drtp_and_dfa, ("rules",))
    assert facts.cell("2x800", "dfa").startswith(f"{facts.cell('2x800', 'dfa').value:.2f} ± ")
    with pytest.raises(findings.FindingUnsupported, match="MNIST 2x800 tanh DRTP, which still lacks seed\\(s\\) 2"):
        facts.cell("2x800", "drtp")
    with pytest.raises(findings.FindingUnsupported, match="does not have"):
        facts.cell("2x800", "backprop")


def test_a_paired_difference_is_the_hand_computed_t_interval(findings, drtp_and_dfa):
    shutil.copytree(RECORDS / "rules" / "mnist_fc800x2_tanh_drtp_s2", drtp_and_dfa / "rules" / "drtp_s2")
    error = {(rule, s): json.loads((drtp_and_dfa / "rules" / f"{rule}_s{s}" / "summary.json").read_text())["test_error"]
             for rule in ("drtp", "dfa") for s in (0, 1, 2)}
    diffs = [error["drtp", s] - error["dfa", s] for s in (0, 1, 2)]
    mean = sum(diffs) / 3
    half = 4.302652729911275 * math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3)   # t(0.975, 2)
    paired = findings.RuleFacts(drtp_and_dfa, ("rules",)).diff("2x800", "drtp", "dfa")
    assert (paired.n, paired.higher, paired.lower) == (3, mean - half > 0, mean + half < 0)
    assert paired.mean == pytest.approx(mean) and paired.low == pytest.approx(mean - half)
    assert paired.interval == f"[{mean - half:+.2f}, {mean + half:+.2f}]".replace("-", "\u2212")
    flipped = findings.RuleFacts(drtp_and_dfa, ("rules",)).diff("2x800", "dfa", "drtp")
    assert flipped.signed == f"{-mean:+.2f}".replace("-", "\u2212")


def test_a_claim_the_records_do_not_bear_stops_the_block_with_one_sentence(findings, tmp_path, monkeypatch):
    assert findings.holds(True, "anything") == ""
    module = load_script("reproduction")
    template = tmp_path / "findings.md"
    template.write_text('{% set d = diff("2x800", "drtp", "dfa") %}'
                        '{% set _ = holds(d.lower, "DRTP beats DFA on 2x800") %}DRTP {{ d.signed }}\n')
    monkeypatch.setattr(sys.modules["reproduction_findings"], "TEMPLATE", template)
    monkeypatch.setattr(sys, "argv", ["reproduction.py", "--check"])
    with pytest.raises(SystemExit) as stopped:
        module.main()
    assert str(stopped.value) == ("reproduction: the findings claim that DRTP beats DFA on 2x800, which the "
                                  f"records no longer bear (the prose: {template}).")


def test_setbacks_count_the_epochs_whose_training_error_rose_more_than_two_points(findings, drtp_and_dfa):
    shutil.copytree(RECORDS / "rules" / "mnist_fc800x2_tanh_drtp_s2", drtp_and_dfa / "rules" / "drtp_s2")
    train = [5.0, 3.0, 6.5, 6.0, 8.5, 8.0]    # 3 → 6.5 and 6 → 8.5 rise more than 2 points: two setbacks
    rows = [{"epoch": i + 1, "train_error": t, "test_error": 4.0} for i, t in enumerate(train)]
    (drtp_and_dfa / "rules" / "drtp_s0" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    facts = findings.RuleFacts(drtp_and_dfa, ("rules",))
    assert facts.setbacks("2x800", "drtp") == "0–2" and facts.setbacks("2x800", "drtp").value == 2
    assert facts.largest_setback("2x800", "drtp").value == pytest.approx(3.5)
    assert facts.setbacks("2x800", "dfa") == "0"


def test_epochs_of_several_rules_span_all_their_seeds(findings, drtp_and_dfa):
    shutil.copytree(RECORDS / "rules" / "mnist_fc800x2_tanh_drtp_s2", drtp_and_dfa / "rules" / "drtp_s2")
    facts = findings.RuleFacts(drtp_and_dfa, ("rules",))
    epochs = [json.loads((drtp_and_dfa / "rules" / f"{rule}_s{s}" / "summary.json").read_text())["epochs"]
              for rule in ("drtp", "dfa") for s in (0, 1, 2)]
    assert facts.epochs("2x800", ["drtp", "dfa"]) == f"{min(epochs)}–{max(epochs)}"
    assert facts.epochs("2x800", "dfa") == facts.epochs("2x800", ["dfa"])
