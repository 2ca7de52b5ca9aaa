"""FGSM adversarial training (Table 1's "+ adversarial" row): direction and size of the perturbation,
true back-propagation whatever the rule, the step on the perturbed batch only, the row preset and
where the report puts its runs."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dfa_cli import report
from dfa_cli.training.adversarial import FGSM, PAPER_EPS, fgsm
from dfa_cli.config import validate
from dfa_cli.data.datasets import load_dataset
from dfa_cli.training.engine import Trainer
from dfa_cli.runs.errors import UserError
from dfa_cli.training.losses import per_replica_loss
from dfa_cli.nets.fc import FCNet
from dfa_cli.runs.records import RunRecord
from dfa_cli.run import train, variant

from conftest import compose_config, count_host_reads
from test_report import csv_cells, one, write_cell


SIZES = [6, 5, 4, 3]
EXACT_EPS = 2 ** -4   # a binary fraction: x + eps − x is exact for x on a 2⁻¹⁰ grid


def make_net(method: str, seeds=(0, 1), **kw) -> FCNet:
    net = FCNet(SIZES, "tanh", method, list(seeds), init="uniform", **kw).double()
    with torch.no_grad():   # forward weights away from their initial values: FA's B ≠ W
        g = torch.Generator().manual_seed(7)
        for w in net.weights:
            w.copy_(torch.randn(w.shape, generator=g, dtype=w.dtype))
    return net


def make_batch(replicas=2, size=7, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 1024, (replicas, size, SIZES[0]), generator=g).double() / 1024   # in (0, 1)
    y = torch.randint(0, SIZES[-1], (replicas, size), generator=g)
    return x, y


def true_input_gradient(net: FCNet, x, y) -> torch.Tensor:
    """∂L/∂x by hand (row vectors): the BP recursion through the current W, whatever net.method is."""
    W = [w.detach() for w in net.weights]
    b = [v.detach() for v in net.biases]
    h = [x]
    for i in range(len(W) - 1):
        h.append(torch.tanh(h[-1] @ W[i] + b[i]))
    a_y = h[-1] @ W[-1] + b[-1]
    g = (torch.sigmoid(a_y) - F.one_hot(y, SIZES[-1]).double()) / x.shape[1]   # BCE, batch mean
    for i in reversed(range(len(W) - 1)):
        g = (g @ W[i + 1].transpose(1, 2)) * (1 - h[i + 1] ** 2)
    return g @ W[0].transpose(1, 2)


@pytest.mark.parametrize("method", ["bp", "fa", "dfa", "ifa"])
def test_fgsm_moves_every_input_by_eps_along_the_true_bp_gradient(method):
    net, (x, y) = make_net(method), make_batch()
    expected = true_input_gradient(net, x, y)
    assert (expected != 0).all()
    x_adv = fgsm(net, x, y, EXACT_EPS)
    delta = x_adv - x
    assert (delta.abs() == EXACT_EPS).all()                       # ‖δx‖∞ = ε, every input moved
    assert torch.equal(delta.sign(), expected.sign())             # each replica along its own gradient
    assert not x_adv.requires_grad and net.method == method       # detached; the rule is back
    other = fgsm(net, x, y, 0.08)
    assert (other - x).abs().max().item() == pytest.approx(0.08, rel=1e-12)


def test_fgsm_of_an_fa_or_dfa_network_is_bp_s_not_the_rule_s():
    x, y = make_batch()
    fa = make_net("fa")
    x_rule = x.clone().requires_grad_(True)                      # FA's own "input gradient": δa_1 Bᵀ
    per_replica_loss(fa(x_rule), y, "bce").sum().backward()
    bp_sign = true_input_gradient(fa, x, y).sign()
    assert not torch.equal(x_rule.grad.sign(), bp_sign)          # the two differ on this net …
    assert torch.equal((fgsm(fa, x, y, EXACT_EPS) - x).sign(), bp_sign)   # … and FGSM follows BP
    dfa, bp = make_net("dfa"), make_net("bp")                    # same seeds, same weights
    bp.load_state_dict(dfa.state_dict(), strict=False)           # (DFA also holds its feedback)
    assert torch.equal(fgsm(dfa, x, y, EXACT_EPS), fgsm(bp, x, y, EXACT_EPS))


def test_fgsm_leaves_parameter_gradients_and_optimizer_state_alone():
    net, (x, y) = make_net("dfa"), make_batch()
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3)
    marked = net.weights[0]
    marked.grad = torch.full_like(marked, 0.5)
    before = marked.grad.clone()
    fgsm(net, x, y, 0.08)
    assert marked.grad is not None and torch.equal(marked.grad, before)
    assert all(p.grad is None for p in net.parameters() if p is not marked)
    assert len(opt.state) == 0


def test_clipping_is_optional_and_off_by_default():
    net, (_, y) = make_net("bp"), make_batch()
    x = torch.zeros(2, 7, SIZES[0], dtype=torch.float64)
    x[..., ::2] = 1.0                                            # pixels at both ends of [0, 1]
    unclipped = fgsm(net, x, y, 0.08)
    assert unclipped.min() < 0 and unclipped.max() > 1
    assert torch.equal(FGSM(0.08)(net, x, y), unclipped)         # default: no clipping (author's code)
    clipped = fgsm(net, x, y, 0.08, clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert torch.equal(clipped, unclipped.clamp(0, 1))


def test_a_zero_initialised_first_layer_gives_no_perturbation():
    net = FCNet(SIZES, "tanh", "dfa", [0], init="paper").double()   # the paper's zero start for DFA
    x, y = make_batch(replicas=1)
    assert torch.equal(fgsm(net, x, y, 0.08), x)   # ∂L/∂x = W_1 δa_1 = 0: sign 0, nothing moves


def make_trainer(fake_mnist, tmp_path, adversarial=None, seeds=(0, 1)):
    data = load_dataset("mnist", fake_mnist, download=False)
    model = FCNet([784, 32, 32, 10], "tanh", "dfa", list(seeds), init="uniform")
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    records = [RunRecord(tmp_path / str(s)) for s in seeds]
    return Trainer(model, opt, data, records, list(seeds), progress=False, max_epochs=2,
                   stop_train_error=0, adversarial=adversarial)


def test_the_adversarial_step_trains_on_the_perturbed_batch_only(fake_mnist, tmp_path):
    adv = make_trainer(fake_mnist, tmp_path / "a", adversarial=FGSM(0.08))
    manual = make_trainer(fake_mnist, tmp_path / "m")
    clean = make_trainer(fake_mnist, tmp_path / "c")
    idx = torch.stack([torch.arange(64), torch.arange(64, 128)])
    adv._train_step(idx)
    clean._train_step(idx)
    x, y = manual.data.x_train[idx], manual.data.y_train[idx]
    x_adv = fgsm(manual.model, x, y, 0.08)
    assert (x_adv - x).abs().max().item() == pytest.approx(0.08, rel=1e-6)
    manual.optimizer.zero_grad()
    per_replica_loss(manual.model(x_adv), y, "bce").sum().backward()
    manual.optimizer.step()
    for a, m, c in zip(adv.model.parameters(), manual.model.parameters(), clean.model.parameters()):
        assert torch.allclose(a, m, rtol=0, atol=1e-7)
    assert any(not torch.allclose(a, c) for a, c in zip(adv.model.parameters(), clean.model.parameters()))


def test_an_adversarial_epoch_reads_the_device_once(fake_mnist, tmp_path, monkeypatch):
    trainer = make_trainer(fake_mnist, tmp_path, adversarial=FGSM(0.08, clip=True))
    reads = count_host_reads(monkeypatch)
    trainer._train_epoch(1)     # four steps, each with its FGSM pass: no host synchronisation
    assert reads == ["cpu"], reads


# ---- config, variant, preset, report --------------------------------------------------------
def test_the_row_preset_is_the_paper_s_adversarial_row():
    cfg = compose_config("experiment=table1/fc800x2_tanh_adversarial")
    validate(cfg)
    assert (cfg.adversarial.eps, cfg.adversarial.clip) == (PAPER_EPS, False)
    assert (cfg.model.name, cfg.model.activation, variant(cfg)) == ("fc800x2", "tanh", "adversarial")
    assert variant(compose_config()) == "none" and compose_config().adversarial.eps == 0
    assert variant(compose_config("dropout=paper", "adversarial.eps=0.08")) == "dropout+adversarial"


@pytest.mark.parametrize("override, words", [
    ("adversarial.eps=1.5", "adversarial.eps must be a number in [0, 1]"),
    ("adversarial.eps=-0.1", "adversarial.eps must be a number"),
    ("adversarial.clip=sometimes", "adversarial.clip must be true or false"),
])
def test_bad_adversarial_settings_are_one_sentence(override, words):
    with pytest.raises(UserError) as err:
        validate(compose_config(override))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_tiny_adversarial_run_records_its_variant(fake_mnist, tmp_path):
    cfg = compose_config(f"data.root={fake_mnist}", "data.download=false", "model.width=16",
                         "trainer.max_epochs=1", "adversarial.eps=0.08", "trainer.progress=false")
    (summary,) = train(cfg, tmp_path)
    assert (summary["variant"], summary["adversarial_eps"], summary["adversarial_clip"]) == \
        ("adversarial", 0.08, False)


def test_the_report_puts_adversarial_runs_in_the_paper_s_row(tmp_path, capsys):
    adv = {"variant": "adversarial", "adversarial_eps": 0.08, "adversarial_clip": False}
    write_cell(tmp_path / "paper", "dfa", [1.0, 1.1], **adv)
    write_cell(tmp_path / "eps", "dfa", [1.3], **{**adv, "adversarial_eps": 0.1})
    write_cell(tmp_path / "clip", "dfa", [1.2], **{**adv, "adversarial_clip": True})
    write_cell(tmp_path / "both", "dfa", [1.4], **{**adv, "variant": "dropout+adversarial", "dropout": "paper"})
    cells = csv_cells(tmp_path, capsys=capsys)
    cell = one(cells, table="table1_mnist", row="2x800 tanh + adversarial", method="dfa")
    assert (cell["n"], cell["ours_mean"], cell["shortened"]) == (2, pytest.approx(1.05), False)
    assert cell["paper_mean"] == 1.02
    other = cells[cells["table"] == "other_runs"]
    assert set(other["setting"].fillna("")) == {"adversarial.eps=0.1", "adversarial.clip=true", ""}
    both = one(other, variant="dropout+adversarial")   # no paper row; its dropout rates are the paper's
    assert pd.isna(both["setting"]) and both["row"] == "2x800 tanh + dropout+adversarial"
    report.main([str(tmp_path), "--format", "markdown"])
    assert "FGSM-perturbed batches" in capsys.readouterr().out   # the row's footnote
