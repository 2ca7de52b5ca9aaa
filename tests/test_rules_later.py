"""The rules of later work (shallow, DRTP, sign symmetry) and DFA's feedback variants, against
float64 hand computations on tiny nets, in the paper's column-vector notation (as test_rules.py)."""
from __future__ import annotations

import math

import pytest
import torch

from dfa_cli.config import validate
from dfa_cli.errors import UserError
from dfa_cli.fast import FastFCStep
from dfa_cli.losses import per_replica_loss
from dfa_cli.models import FCNet
from dfa_cli.rules import feedback_block

from conftest import compose_config
from test_rules import SIZES, accumulate, batch, dfa_block, example_forward, implementation_grads

LATER = ["shallow", "drtp", "usf", "brsf", "frsf"]


def make(method, seed=0):
    return FCNet(SIZES, "tanh", method, [seed], init="uniform").double()


def grads_by_autograd(net, x, y):
    net.zero_grad(set_to_none=True)
    per_replica_loss(net(x, targets=y), y, "bce").sum().backward()
    return [(w.grad[0].T if w.grad is not None else torch.zeros_like(w[0].T)) for w in net.weights] + \
           [(b.grad[0, 0] if b.grad is not None else torch.zeros_like(b[0, 0])) for b in net.biases]


def brsf_magnitudes(net, seed):
    """The M_i brSF draws in its forward pass (layers 2.. and the output, in that order), paper-shaped."""
    torch.manual_seed(seed)
    return {i: (torch.rand(net.weights[i].shape, dtype=torch.float64) / math.sqrt(net.weights[i].shape[1]))[0].T
            for i in range(1, len(net.weights))}


def reference(net, x, y, method, magnitudes=None):
    W = [w[0].T.detach() for w in net.weights]
    b = [bb[0, 0].detach() for bb in net.biases]
    L = len(W) - 1
    dW, db = [torch.zeros_like(w) for w in W], [torch.zeros_like(v) for v in b]
    for n in range(x.shape[1]):
        h, target, e, fprime = example_forward(W, b, x[0, n], y[0, n], x.shape[1])
        delta = [torch.zeros_like(hi) for hi in h[1:]]
        if method == "drtp":                                   # y* (over the batch) in place of e
            for i in range(L):
                delta[i] = (dfa_block(net, i) @ (target / x.shape[1])) * fprime[i]
        elif method in ("usf", "brsf", "frsf"):                # FA through B_{i+1}ᵀ made from sign(W_{i+1})
            nxt = e
            for i in reversed(range(L)):
                sign, fan_in = torch.sign(W[i + 1]), W[i + 1].shape[1]
                if method == "usf":
                    B = sign / math.sqrt(3 * fan_in)
                elif method == "frsf":
                    B = getattr(net, f"sign_magnitudes{i + 1}")[0].T * sign
                else:
                    B = magnitudes[i + 1] * sign
                delta[i] = (B.T @ nxt) * fprime[i]
                nxt = delta[i]
        accumulate(dW, db, delta, h, e)                        # shallow: δ stays 0
    return dW + db


@pytest.mark.parametrize("method", LATER)
def test_rule_matches_hand_computation(method):
    net, (x, y) = make(method), batch()
    magnitudes = brsf_magnitudes(net, 7) if method == "brsf" else None
    torch.manual_seed(7)
    got = grads_by_autograd(net, x, y)
    for g, w in zip(got, reference(net, x, y, method, magnitudes)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    torch.manual_seed(7)
    FastFCStep(net)(x, y)                                       # the CPU's hand-written step too
    fast = [w.grad[0].T for w in net.weights] + [bb.grad[0, 0] for bb in net.biases]
    for g, w in zip(fast, reference(net, x, y, method, magnitudes)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", LATER)
def test_each_rule_differs_from_bp_below_the_top_and_agrees_on_the_top(method):
    net, (x, y) = make(method), batch()
    bp = make("bp")
    bp.load_state_dict(net.state_dict(), strict=False)
    torch.manual_seed(3)
    got, want = grads_by_autograd(net, x, y), implementation_grads(bp, x, y)
    n = len(net.weights)
    torch.testing.assert_close(got[n - 1], want[n - 1])          # the output layer learns from e
    assert not torch.allclose(got[0], want[0])                    # layer 1 does not get BP's signal


def test_shallow_leaves_the_hidden_weights_untouched_and_trains_the_output():
    for fast in (False, True):
        net = FCNet(SIZES, "tanh", "shallow", [0])
        assert net.init == "uniform"
        before = [p.detach().clone() for p in net.parameters()]
        opt = torch.optim.RMSprop(net.parameters(), lr=1e-2)
        x, y = batch()
        for _ in range(5):
            if fast:
                FastFCStep(net)(x.float(), y)
            else:
                opt.zero_grad(set_to_none=True)
                per_replica_loss(net(x.float()), y, "bce").sum().backward()
            opt.step()
        n = len(net.weights)
        params = list(net.parameters())
        assert all(torch.equal(params[i], before[i]) for i in range(n - 1))                # hidden W
        assert all(torch.equal(params[n + i], before[n + i]) for i in range(n - 1))        # hidden b
        assert not torch.equal(params[n - 1], before[n - 1])                                 # output W


def test_drtp_hidden_updates_need_no_output_error():
    """Change the output layer (and so e): DRTP's hidden gradients stay exactly the same."""
    net, (x, y) = make("drtp"), batch()
    first = grads_by_autograd(net, x, y)
    with torch.no_grad():
        net.weights[-1].mul_(-5.0).add_(0.3)
        net.biases[-1].add_(1.0)
    second = grads_by_autograd(net, x, y)
    n = len(net.weights)
    for i in range(n - 1):
        torch.testing.assert_close(second[i], first[i], rtol=0, atol=0)
    assert not torch.allclose(second[n - 1], first[n - 1])
    assert FCNet(SIZES, "tanh", "drtp", [0]).init == "zero"       # like DFA: signals never read W


def test_brsf_draws_new_magnitudes_every_step_and_frsf_keeps_its_own():
    net, (x, y) = make("brsf"), batch()
    torch.manual_seed(1)
    a = grads_by_autograd(net, x, y)
    b = grads_by_autograd(net, x, y)
    assert not torch.allclose(a[0], b[0])
    frsf, bp = make("frsf"), make("bp")
    m = frsf.sign_magnitudes1
    assert (m >= 0).all() and m.max() <= 1 / math.sqrt(m.shape[1])
    assert not torch.allclose(m, bp.weights[1].abs())             # M is not |W₀| (B would equal W)


# ---- DFA's feedback variants ---------------------------------------------------------------------
def test_feedback_kinds_have_the_paper_scale():
    g = torch.Generator().manual_seed(0)
    n = 400
    uni, gau, bi = (feedback_block(10, n, g, kind) for kind in ("uniform", "gaussian", "binary"))
    var = 1 / (3 * n)
    assert uni.abs().max() <= 1 / math.sqrt(n)
    for block in (uni, gau, bi):
        assert block.var().item() == pytest.approx(var, rel=0.1)
    assert torch.allclose(bi.abs(), torch.full_like(bi, math.sqrt(var)))
    g0, g1 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(feedback_block(10, n, g0),                       # the paper's draw, unchanged
                               torch.rand(10, n, generator=g1).mul(2 / math.sqrt(n)).sub(1 / math.sqrt(n)))


@pytest.mark.parametrize("density, k", [(0.1, 1), (0.3, 3), (0.01, 1), (1.0, 10)])
def test_sparse_feedback_gives_every_hidden_unit_k_errors(density, k):
    block = feedback_block(10, 50, torch.Generator().manual_seed(2), "binary", density)
    assert ((block != 0).sum(0) == k).all()
    net = FCNet([6, 50, 40, 10], "tanh", "dfa", [0], feedback="gaussian", density=density)
    assert ((net.feedback[0] != 0).sum(0) == k).all()


@pytest.mark.parametrize("overrides, words", [
    (["method.density=0"], "method.density must be a number in (0, 1]"),
    (["method.density=1.5"], "method.density must be a number in (0, 1]"),
    (["method=fa", "method.feedback=binary"], "applies to method=dfa only, not method=fa"),
    (["method=drtp", "method.density=0.5"], "applies to method=dfa only"),
    (["method.feedback=ternary"], "method.feedback='ternary' is not supported"),
    (["method=usf", "model=conv", "data=cifar10"], "fully connected models only"),
    (["method=shallow", "init=zero"], "init=zero cannot train method=shallow"),
    (["method=frsf", "init=zero"], "sign(0) = 0"),
])
def test_senseless_settings_are_refused_in_one_sentence(overrides, words):
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        validate(compose_config(*overrides))
