"""loss.reduction: the author's summed error, computed by hand in float64.

The author's BCECriterion hands back ``e = σ(a) − y`` per example and nn.Linear sums the weight
gradient over the batch, so RMSprop sees the batch's **sum**: a full batch steps as with a mean (up
to eps), the last partial batch about n/64 as far. Here one epoch of 80 examples (a batch of 64, then
16) runs through the trainer, on the hand-written CPU step and on autograd, and every parameter
is held to the RMSprop steps written out below from the rules' own formulas (DESIGN §1).
"""
from __future__ import annotations

import pytest
import torch

from dfa_cli.data.datasets import Dataset
from dfa_cli.training.engine import ORDER_SEED_OFFSET, Trainer
from dfa_cli.nets.fc import FCNet
from dfa_cli.training.optim import build_optimizer
from omegaconf import OmegaConf

SIZES = [6, 5, 4, 3]           # two tanh hidden layers, three classes
N, BATCH, SEED = 80, 64, 3     # 80 = 64 + 16: the epoch ends on a partial batch
LR, ALPHA, EPS = 1e-2, 0.99, 1e-8


class _Nowhere:
    """A record that keeps nothing (the trainer's one-epoch runs here need no files)."""
    def log_epoch(self, row):
        pass

    def write_summary(self, summary):
        pass


def _data(n: int = N) -> Dataset:
    g = torch.Generator().manual_seed(7)
    x = torch.rand(N, SIZES[0], generator=g, dtype=torch.float64)[:n]
    y = torch.randint(0, SIZES[-1], (N,), generator=g)[:n]
    return Dataset("toy", x, y, x[:8], y[:8], (1, 1, SIZES[0]), SIZES[-1], "")


def _net(method: str) -> FCNet:
    # init=uniform: every layer starts random, so the hidden layers' signals are not zero at once
    return FCNet(SIZES, "tanh", method, [SEED], init="uniform", reduction="sum").double()


def _rmsprop(net, eps: float = EPS):
    return build_optimizer(net.parameters(), OmegaConf.create(
        {"name": "rmsprop", "lr": LR, "alpha": ALPHA, "eps": eps, "momentum": 0.0}))


def _trained(method: str, reduction: str, fast: bool, n: int = N):
    net, data = _net(method), _data(n)
    net.reduction = reduction
    trainer = Trainer(net, _rmsprop(net), data, [_Nowhere()], [SEED], loss="bce", reduction=reduction,
                      batch_size=BATCH, max_epochs=1, progress=False, checkpoint_every=0, fast_step=fast)
    trainer._train_epoch(1)
    return [p.detach().clone() for p in net.parameters()]


def _hand_gradients(method, net, x, y):
    """Per the rules' formulas, the gradients summed over the batch: [W1, W2, W3, b1, b2, b3]."""
    W = [w[0] for w in net.weights]
    b = [v[0, 0] for v in net.biases]
    h0 = x
    h1 = torch.tanh(h0 @ W[0] + b[0])
    h2 = torch.tanh(h1 @ W[1] + b[1])
    logits = h2 @ W[2] + b[2]
    e = torch.sigmoid(logits) - torch.nn.functional.one_hot(y, SIZES[-1]).double()   # per example
    if method == "bp":
        g2 = e @ W[2].T
        d2 = g2 * (1 - h2 ** 2)
        d1 = (d2 @ W[1].T) * (1 - h1 ** 2)
    elif method == "fa":   # B_{i+1}: the layer's initial random weights, fixed
        d2 = (e @ net.fa_feedback2[0].T) * (1 - h2 ** 2)
        d1 = (d2 @ net.fa_feedback1[0].T) * (1 - h1 ** 2)
    else:                  # dfa: B_i e for every hidden layer, from its own slice of B
        B1, B2 = net.feedback[0].split(SIZES[1:3], dim=1)
        d1 = (e @ B1) * (1 - h1 ** 2)
        d2 = (e @ B2) * (1 - h2 ** 2)
    grads_w = [h0.T @ d1, h1.T @ d2, h2.T @ e]
    grads_b = [d1.sum(0), d2.sum(0), e.sum(0)]
    return grads_w, grads_b


def _by_hand(method: str, reduction: str) -> list[torch.Tensor]:
    """The epoch written out: the trainer's order, the gradient summed over each batch (``sum``) or
    averaged (``mean``), and RMSprop (v ← αv + (1−α)g², p ← p − lr·g/(√v + ε)) on each."""
    net, data = _net(method), _data()
    order = torch.randperm(N, generator=torch.Generator().manual_seed(SEED + ORDER_SEED_OFFSET))
    W = [w.detach()[0].clone() for w in net.weights]
    b = [v.detach()[0, 0].clone() for v in net.biases]
    params = W + b
    square = [torch.zeros_like(p) for p in params]
    for start in range(0, N, BATCH):
        idx = order[start:start + BATCH]
        with torch.no_grad():
            for i in range(3):
                net.weights[i][0].copy_(W[i])
                net.biases[i][0, 0].copy_(b[i])
        gw, gb = _hand_gradients(method, net, data.x_train[idx], data.y_train[idx])
        grads = gw + gb
        if reduction == "mean":
            grads = [g / len(idx) for g in grads]
        for p, v, g in zip(params, square, grads):
            v.mul_(ALPHA).add_((1 - ALPHA) * g * g)
            p.sub_(LR * g / (v.sqrt() + EPS))
    return [p.unsqueeze(0) for p in W] + [p.reshape(1, 1, -1) for p in b]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-step", "autograd"])
@pytest.mark.parametrize("method", ["bp", "fa", "dfa"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_an_epoch_ending_on_a_partial_batch_takes_the_steps_written_out(method, reduction, fast):
    got, want = _trained(method, reduction, fast), _by_hand(method, reduction)   # weights, then biases
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def _two_steps(method: str, reduction: str, eps: float):
    """The parameters' moves in a batch of 64, then in the batch of the remaining 16."""
    net, data = _net(method), _data()
    trainer = Trainer(net, _rmsprop(net, eps), data, [_Nowhere()], [SEED],
                      reduction=reduction, batch_size=BATCH, progress=False, checkpoint_every=0, fast_step=True)
    order = torch.randperm(N, generator=torch.Generator().manual_seed(0)).unsqueeze(0)
    snapshots = [torch.cat([p.detach().flatten() for p in net.parameters()])]
    for idx in (order[:, :BATCH], order[:, BATCH:]):
        trainer._train_step(idx)
        snapshots.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    return snapshots[1] - snapshots[0], snapshots[2] - snapshots[1]


@pytest.mark.parametrize("method", ["bp", "fa", "dfa"])
def test_the_summed_error_shortens_only_the_partial_batch_step(method):
    """A full batch steps as with the mean, but for eps (with eps 0, to rounding); the last batch of
    16 steps shorter."""
    for eps in (0.0, EPS):
        (full_sum, last_sum), (full_mean, last_mean) = _two_steps(method, "sum", eps), _two_steps(method, "mean", eps)
        assert full_sum.abs().max() > 0 and last_sum.abs().max() > 0
        if eps == 0:
            torch.testing.assert_close(full_sum, full_mean, rtol=1e-12, atol=1e-15)
        else:   # eps weighs 64 times less against the summed gradient: a full step a little longer
            assert (full_sum.abs() >= full_mean.abs() * (1 - 1e-12)).all()
            torch.testing.assert_close(full_sum, full_mean, rtol=1e-3, atol=0)
    # summed over 16 examples the gradient is about a quarter of a full batch's, and RMSprop's
    # average still remembers the full one: the author's last step is well short of a full one
    assert last_sum.norm() < 0.75 * last_mean.norm()   # (measured here: 0.61–0.63 for FA and DFA)


def test_the_reported_loss_is_per_example_either_way():
    losses = {}
    for reduction in ("sum", "mean"):
        net, data = _net("dfa"), _data()
        trainer = Trainer(net, _rmsprop(net), data, [_Nowhere()], [SEED],
                          reduction=reduction, batch_size=N, max_epochs=1, progress=False, checkpoint_every=0)
        losses[reduction] = trainer._train_epoch(1)[0, 0].item()   # one batch: the loss before any step
    assert losses["sum"] == pytest.approx(losses["mean"], rel=1e-12)
    assert 0.5 < losses["sum"] < 5   # 3 classes of BCE per example, not × 80


# ---- the setting, end to end -------------------------------------------------------------------
def test_the_paper_loss_sums_and_the_record_says_so(fake_mnist, tmp_path):
    from conftest import compose_config
    from dfa_cli.run import train
    base = (f"data.root={fake_mnist}", "data.download=false", "model.width=16", "trainer.max_epochs=1",
            "trainer.progress=false", "data.subset=100")
    assert compose_config(*base).loss.reduction == "sum"          # the author's step is the default
    assert compose_config(*base, "loss=ce").loss.reduction == "mean"   # his ClassNLLCriterion averages
    runs = {r: train(compose_config(*base, f"loss.reduction={r}"), tmp_path / r)[0] for r in ("sum", "mean")}
    assert [runs[r]["loss_reduction"] for r in ("sum", "mean")] == ["sum", "mean"]
    assert runs["sum"]["test_loss"] != runs["mean"]["test_loss"]   # 100 = 64 + 36: the last step differs


def test_a_custom_model_gets_the_reduction_for_drtp(fake_mnist):
    from conftest import compose_config
    from dfa_cli.feedback import output_of
    from dfa_cli.network import build_model
    for reduction in ("sum", "mean"):
        cfg = compose_config("model=custom", "+model.kwargs.width=16", "+model.kwargs.blocks=1", "method=drtp",
                             f"loss.reduction={reduction}")
        assert output_of(build_model(cfg, (1, 28, 28), 10, [0]).module).reduction == reduction


def test_an_unknown_reduction_is_one_sentence():
    from conftest import compose_config
    from dfa_cli.config import validate
    from dfa_cli.runs.errors import UserError
    with pytest.raises(UserError, match=r"loss.reduction.*'avg'"):
        validate(compose_config("loss.reduction=avg"))


def test_a_run_started_before_the_setting_resumes_only_as_it_ran():
    """A checkpoint whose config has no loss.reduction trained on the batch mean: resuming it on the
    new default (sum) is a difference, named; with loss.reduction=mean it is none."""
    from dfa_cli.runs.checkpoint import config_differences
    before = {"loss": {"name": "bce"}, "trainer": {"max_epochs": 300}}
    now = {"loss": {"name": "bce", "reduction": "sum"}, "trainer": {"max_epochs": 300, "new_key": 1}}
    assert config_differences(before, now) == ["loss.reduction: 'mean' → 'sum'"]
    now["loss"]["reduction"] = "mean"
    assert config_differences(before, now) == []
