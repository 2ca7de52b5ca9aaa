"""The CPU's hand-written step (dfa_cli.training.fast) computes what autograd through dfa_cli.nets.rules computes."""
from __future__ import annotations

import itertools

import pytest
import torch

from dfa_cli.training.adversarial import fgsm, input_gradient
from dfa_cli.training.fast import FastFCStep, supported
from dfa_cli.training.losses import batch_scale, per_replica_loss
from dfa_cli.nets.conv import ConvNet
from dfa_cli.nets.fc import METHODS, FCNet
from dfa_cli.run import train

from test_engine import quick, read_metrics
from test_rules import reference_grads

SIZES = [12, 9, 7, 5, 4]


def _net(method, activation, seeds, dropout, dtype):
    net = FCNet(SIZES, activation, method, seeds, init="uniform",
                dropout_input=0.2 if dropout else 0.0, dropout_hidden=0.5 if dropout else 0.0)
    return net.to(dtype)


def _batch(replicas, dtype, seed=5):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(replicas, 16, SIZES[0], generator=g, dtype=dtype),
            torch.randint(0, SIZES[-1], (replicas, 16), generator=g))


def _autograd(net, x, y, loss, reduction="mean"):
    net.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    net.reduction = reduction   # (DRTP's targets)
    losses = per_replica_loss(net(x, targets=y), y, loss)
    (losses.sum() * batch_scale(x.shape[1], reduction)).backward()
    return losses.detach(), _grads(net)


def _fast(net, x, y, loss, reduction="mean"):
    """The fast step with every ``.grad`` set to NaN first: it only makes a ``.grad`` that is missing,
    so a layer it skipped would otherwise still hold what autograd left there, and pass."""
    for p in net.parameters():
        p.grad = torch.full_like(p, float("nan"))
    torch.manual_seed(11)            # the same dropout masks: same calls, same order
    losses, _ = FastFCStep(net, loss, reduction)(x, y)
    return losses, _grads(net)


def _grads(net):
    return {name: None if p.grad is None else p.grad.clone() for name, p in net.named_parameters()}


def mismatches(got: dict, want: dict, tol: float) -> list[str]:
    """The parameters whose gradients differ: one of the two missing, or apart by more than ``tol``."""
    assert got.keys() == want.keys()
    return [name for name, w in want.items()
            if (got[name] is None) != (w is None)
            or (w is not None and not torch.allclose(got[name], w, rtol=tol, atol=tol))]


def fast_vs_autograd(method, activation, dropout, replicas, loss="bce", reduction="mean") -> list[str]:
    """Both paths on the same net and batch, float64 and float32: every layer that disagrees."""
    bad = []
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        net = _net(method, activation, list(range(replicas)), dropout, dtype)
        x, y = _batch(replicas, dtype)
        net.train()
        loss_a, grads_a = _autograd(net, x, y, loss, reduction)
        loss_f, grads_f = _fast(net, x, y, loss, reduction)
        torch.testing.assert_close(loss_f, loss_a, rtol=tol, atol=tol)
        bad += [f"{name} ({dtype})" for name in mismatches(grads_f, grads_a, tol)]
        hidden = [grads_a[f"weights.{i}"] for i in range(len(SIZES) - 2)]
        if method != "shallow":
            assert all(g.abs().sum() > 0 for g in hidden)   # hidden layers do learn: the check is not vacuous
    return bad


CASES = list(itertools.product(["bp", "fa", "dfa", "ifa"], ["tanh", "logistic", "relu"], [False, True], [1, 3]))
CASES += [(m, "tanh", dropout, 2) for m in ("shallow", "drtp", "usf", "brsf", "frsf") for dropout in (False, True)]


@pytest.mark.parametrize("method, activation, dropout, replicas", CASES)
def test_fast_step_equals_autograd(method, activation, dropout, replicas):
    assert fast_vs_autograd(method, activation, dropout, replicas) == []


@pytest.mark.parametrize("method", ["bp", "fa", "dfa", "ifa", "drtp", "shallow", "usf", "brsf", "frsf"])
@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_fast_step_equals_autograd_on_the_summed_error(method, loss):
    """loss.reduction=sum (the author's step): e and DRTP's targets not divided by the batch, on both paths."""
    assert fast_vs_autograd(method, "tanh", True, 2, loss=loss, reduction="sum") == []


def test_the_summed_error_is_the_mean_times_the_batch():
    """The same net and batch: every gradient under sum is the batch size times the mean's (DRTP too)."""
    for method in ("dfa", "drtp"):
        net, (x, y) = _net(method, "tanh", [0, 1], False, torch.float64), _batch(2, torch.float64)
        _, mean = _fast(net, x, y, "bce", "mean")
        _, summed = _fast(net, x, y, "bce", "sum")
        for name in mean:
            torch.testing.assert_close(summed[name], mean[name] * x.shape[1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["bp", "fa", "dfa", "ifa", "drtp", "usf", "brsf", "frsf"])
def test_the_check_catches_a_rule_sent_down_shallows_early_return(method, monkeypatch):
    """Were the fast step to route a rule to shallow's early return (no hidden gradients), the
    check above must fail on exactly the hidden layers, though autograd ran on the same net first."""
    monkeypatch.setattr(FastFCStep, "_hidden_grads", lambda self, *args: None)
    hidden = [f"{kind}.{i}" for kind in ("weights", "biases") for i in range(len(SIZES) - 2)]
    assert sorted(fast_vs_autograd(method, "tanh", False, 2)) == sorted(
        f"{name} ({dtype})" for name in hidden for dtype in (torch.float64, torch.float32))


@pytest.mark.parametrize("method", ["bp", "fa", "dfa", "ifa"])
def test_fast_step_against_the_hand_computation(method):
    """The float64 reference of test_rules (paper notation, example by example)."""
    sizes = [5, 4, 3, 2]
    net = FCNet(sizes, "tanh", method, [0], init="uniform").double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, sizes[0], generator=g, dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (1, 6), generator=g)
    FastFCStep(net, "bce")(x, y)
    got = [w.grad[0].T for w in net.weights] + [b.grad[0, 0] for b in net.biases]
    for a, b in zip(got, reference_grads(net, x, y, method)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fast_step_with_softmax_cross_entropy():
    assert fast_vs_autograd("dfa", "tanh", False, 2, loss="ce") == []


def test_dfa_fast_step_is_dfa_not_bp():
    """Silent fallback to BP is the field's classic bug: layer 1's DFA gradient is
    x_ᵀ[(e B_1) ⊙ f′(a_1)], computed here directly, and differs from BP's on the same weights."""
    net = _net("dfa", "tanh", [0], False, torch.float64)
    bp = _net("bp", "tanh", [0], False, torch.float64)
    x, y = _batch(1, torch.float64)
    FastFCStep(net)(x, y)
    FastFCStep(bp)(x, y)
    assert not torch.allclose(net.weights[0].grad, bp.weights[0].grad)
    h1 = torch.tanh(torch.baddbmm(net.biases[0], x, net.weights[0]))
    e = (torch.sigmoid(net.eval()(x)) - torch.nn.functional.one_hot(y, SIZES[-1]).double()) / x.shape[1]
    delta1 = (e @ net.feedback[..., :SIZES[1]]) * (1 - h1 ** 2)
    torch.testing.assert_close(net.weights[0].grad, x.transpose(1, 2) @ delta1)


@pytest.mark.parametrize("method, activation, dropout, replicas",
                         [c for c in CASES if c[0] in ("bp", "fa", "dfa", "ifa", "drtp")])
def test_fast_fgsm_gradient_equals_autograd_true_bp(method, activation, dropout, replicas):
    """FGSM's ∂L/∂x, hand-written, is autograd's through the same net run as BP, same dropout masks."""
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        net = _net(method, activation, list(range(replicas)), dropout, dtype)
        x, y = _batch(replicas, dtype)
        net.train()
        torch.manual_seed(11)
        by_autograd = input_gradient(net, x, y, "bce")
        torch.manual_seed(11)
        by_hand = FastFCStep(net, "bce").input_gradient(x, y)
        torch.testing.assert_close(by_hand, by_autograd, rtol=tol, atol=tol)
        assert by_hand.abs().sum() > 0
        if dtype == torch.float64:   # so the perturbed batches are the same
            torch.manual_seed(11)
            x_auto = fgsm(net, x, y, 0.08)
            torch.manual_seed(11)
            x_hand = fgsm(net, x, y, 0.08, gradient=FastFCStep(net, "bce").input_gradient)
            assert torch.equal(x_hand, x_auto)


def test_fast_fgsm_gradient_is_true_bp_also_for_dfa():
    """Under DFA the gradient goes down through Wᵀ, not the feedback B: it equals BP's net's gradient."""
    dfa = _net("dfa", "tanh", [0], False, torch.float64)
    bp = _net("bp", "tanh", [0], False, torch.float64)
    bp.load_state_dict(dfa.state_dict(), strict=False)
    x, y = _batch(1, torch.float64)
    torch.testing.assert_close(FastFCStep(dfa, "bce").input_gradient(x, y), FastFCStep(bp, "bce").input_gradient(x, y))


def test_only_the_nets_it_knows():
    """Every rule of the fully connected net; the conv net trains through autograd."""
    assert all(supported(FCNet([4, 3, 2], "tanh", m, [0])) for m in METHODS)
    assert not supported(ConvNet((1, 8, 8), 2, "dfa", [0], channels=(2,), fc=(4,), kernel=3, padding=1))


@pytest.mark.parametrize("variant", ["dropout=paper", "adversarial.eps=0.08"])
def test_a_run_with_the_fast_step_records_what_autograd_records(fake_mnist, tmp_path, variant):
    fast = train(quick(fake_mnist, "method=dfa", variant, "trainer.fast_step=true"), tmp_path / "f")[0]
    slow = train(quick(fake_mnist, "method=dfa", variant, "trainer.fast_step=false"), tmp_path / "s")[0]
    assert fast["fast_step"] is True and slow["fast_step"] is False
    for a, b in zip(read_metrics(tmp_path / "f"), read_metrics(tmp_path / "s")):
        for key in ("train_loss", "test_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5)
