"""The rules of later work (shallow, DRTP, sign symmetry) and DFA's feedback variants, against
float64 hand computations on tiny nets, in the paper's column-vector notation (as test_rules.py)."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from dfa_cli.config import validate
from dfa_cli.nets.conv import ConvNet
from dfa_cli.runs.errors import UserError
from dfa_cli.training.fast import FastFCStep
from dfa_cli.training.losses import per_replica_loss
from dfa_cli.nets.fc import FCNet
from dfa_cli.network import build_model
from dfa_cli.training.optim import build_optimizer
from dfa_cli.nets.rules import feedback_block, feedback_bound

from conftest import compose_config
from test_rules import (BATCH, SIZES, accumulate, batch, dfa_block, example_forward, implementation_grads,
                        make_net, reference_grads)

LATER = ["shallow", "drtp", "usf", "brsf", "frsf"]


def make(method, seed=0):
    return FCNet(SIZES, "tanh", method, [seed], init="uniform").double()


def paper_shaped(net):
    """[dW_1.., db_1..] as the paper's matrices; a missing gradient (shallow's hidden layers) is 0."""
    return [(w.grad[0].T if w.grad is not None else torch.zeros_like(w[0].T)) for w in net.weights] + \
           [(b.grad[0, 0] if b.grad is not None else torch.zeros_like(b[0, 0])) for b in net.biases]


def grads_by_autograd(net, x, y):
    net.zero_grad(set_to_none=True)
    per_replica_loss(net(x, targets=y), y, "bce").sum().backward()
    return paper_shaped(net)


def grads_by_fast_step(net, x, y):
    """The fast step's gradients, every ``.grad`` set to NaN first: the step only makes a missing
    one, so a layer it skipped would still hold an earlier autograd pass's values."""
    for p in net.parameters():
        p.grad = torch.full_like(p, float("nan"))
    FastFCStep(net)(x, y)
    return paper_shaped(net)


def mismatches(got, want) -> list[str]:
    """The layers (W1.., b1..) whose gradients are not the hand computation's, to float64 rounding."""
    n = len(got) // 2
    names = [f"W{i + 1}" for i in range(n)] + [f"b{i + 1}" for i in range(n)]
    return [name for name, g, w in zip(names, got, want) if not torch.allclose(g, w, rtol=1e-10, atol=1e-12)]


def brsf_magnitudes(net, seed):
    """The M_i brSF draws in its forward pass (layers 2.. and the output, in that order), paper-shaped."""
    torch.manual_seed(seed)
    return {i: (torch.rand(net.weights[i].shape, dtype=torch.float64) / math.sqrt(net.weights[i].shape[1]))[0].T
            for i in range(1, len(net.weights))}


def reference(net, x, y, method, magnitudes=None, targets_over_batch=True):
    """``magnitudes``: the M_i of brSF, or frSF's (default: its buffer); DRTP projects y*/batch, or
    y* itself (``targets_over_batch=False``, the source's scale)."""
    W = [w[0].T.detach() for w in net.weights]
    b = [bb[0, 0].detach() for bb in net.biases]
    L = len(W) - 1
    dW, db = [torch.zeros_like(w) for w in W], [torch.zeros_like(v) for v in b]
    for n in range(x.shape[1]):
        h, target, e, fprime = example_forward(W, b, x[0, n], y[0, n], x.shape[1])
        delta = [torch.zeros_like(hi) for hi in h[1:]]
        if method == "drtp":                                   # y* (over the batch) in place of e
            t = target / x.shape[1] if targets_over_batch else target
            for i in range(L):
                delta[i] = (dfa_block(net, i) @ t) * fprime[i]
        elif method in ("usf", "brsf", "frsf"):                # FA through B_{i+1}ᵀ made from sign(W_{i+1})
            nxt = e
            for i in reversed(range(L)):
                sign, fan_in = torch.sign(W[i + 1]), W[i + 1].shape[1]
                if method == "usf":
                    B = sign / math.sqrt(3 * fan_in)
                elif method == "frsf" and magnitudes is None:
                    B = getattr(net, f"sign_magnitudes{i + 1}")[0].T * sign
                else:
                    B = magnitudes[i + 1] * sign
                delta[i] = (B.T @ nxt) * fprime[i]
                nxt = delta[i]
        accumulate(dW, db, delta, h, e)                        # shallow: δ stays 0
    return dW + db


def both_paths_vs_hand(method) -> list[str]:
    """Autograd, then the fast step on the same net: the layers either gets wrong."""
    net, (x, y) = make(method), batch()
    magnitudes = brsf_magnitudes(net, 7) if method == "brsf" else None
    want = reference(net, x, y, method, magnitudes)
    torch.manual_seed(7)
    bad = [f"autograd {name}" for name in mismatches(grads_by_autograd(net, x, y), want)]
    torch.manual_seed(7)
    return bad + [f"fast {name}" for name in mismatches(grads_by_fast_step(net, x, y), want)]


@pytest.mark.parametrize("method", LATER)
def test_rule_matches_hand_computation(method):
    assert both_paths_vs_hand(method) == []


@pytest.mark.parametrize("method", ["drtp", "usf", "brsf", "frsf"])
def test_the_hand_check_catches_a_fast_step_that_skips_the_hidden_layers(method, monkeypatch):
    """A rule routed to shallow's early return: the fast path fails on every hidden layer."""
    monkeypatch.setattr(FastFCStep, "_hidden_grads", lambda self, *args: None)
    assert both_paths_vs_hand(method) == ["fast W1", "fast W2", "fast b1", "fast b2"]


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


@pytest.mark.parametrize("path", ["autograd", "fast"])
def test_frsf_keeps_the_magnitudes_drawn_at_the_start_and_brsf_draws_new_ones_every_step(path):
    """Four SGD steps (W moves, signs may flip). At every step the gradients are the hand computation's
    with frSF's M as copied at initialisation (not the buffer read afterwards), and with brSF's M as
    drawn at that step, which the previous step's M no longer gives."""
    grads = grads_by_autograd if path == "autograd" else grads_by_fast_step
    x, y = batch()
    for method in ("frsf", "brsf"):
        net = make(method)
        start = [p.detach().clone() for p in net.parameters()]
        at_init = {i: getattr(net, f"sign_magnitudes{i}")[0].T.clone() for i in range(1, len(net.weights))} \
            if method == "frsf" else None
        opt, previous = torch.optim.SGD(net.parameters(), lr=0.5), None
        for step in range(4):
            torch.manual_seed(100 + step)
            got = grads(net, x, y)
            used = at_init if method == "frsf" else brsf_magnitudes(net, 100 + step)
            assert mismatches(got, reference(net, x, y, method, used)) == [], (method, step)
            if previous is not None:   # brSF's magnitudes changed: every hidden layer sees it
                assert mismatches(got, reference(net, x, y, method, previous)) == ["W1", "W2", "b1", "b2"]
            previous = used if method == "brsf" else None
            opt.step()
        assert not any(torch.equal(a, b) for a, b in zip(net.parameters(), start))   # the weights moved
        if method == "frsf":
            assert all(torch.equal(getattr(net, f"sign_magnitudes{i}")[0].T, m) for i, m in at_init.items())
    frsf, bp = make("frsf"), make("bp")
    m = frsf.sign_magnitudes1
    assert (m >= 0).all() and m.max() <= 1 / math.sqrt(m.shape[1])
    assert not torch.allclose(m, bp.weights[1].abs())             # M is not |W₀| (B would equal W)


@pytest.mark.parametrize("optim", [
    {"name": "rmsprop", "lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.1},
    {"name": "adam", "lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1},
    {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.1},
    {"name": "rmsprop", "lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "fused": True},   # flat buffers
])
def test_shallow_with_weight_decay_moves_only_the_output_layer_on_both_paths(optim):
    """Weight decay acts on any parameter with a gradient, even a zero one: the hidden layers of
    shallow must have none on either path, so they do not move at all and both paths stay equal.
    (The fused RMSprop, which has no weight decay, flattens only the parameters with a gradient.)"""
    trained = {}
    for fast in (False, True):
        net = FCNet(SIZES, "tanh", "shallow", [0, 1]).double()
        before = [p.detach().clone() for p in net.parameters()]
        cfg = OmegaConf.create(optim)
        opt, step = build_optimizer(net.parameters(), cfg, fused=cfg.get("fused", False)), FastFCStep(net)
        for s in range(5):
            x, y = batch(seed=s)
            x, y = x.expand(2, -1, -1), y.expand(2, -1)
            if fast:
                step(x, y)
            else:
                opt.zero_grad(set_to_none=True)
                per_replica_loss(net(x), y, "bce").sum().backward()
            opt.step()
        n = len(net.weights)
        moved = [not torch.equal(p, b) for p, b in zip(net.parameters(), before)]
        assert moved == [False] * (n - 1) + [True] + [False] * (n - 1) + [True], (fast, moved)
        trained[fast] = list(net.parameters())
    for a, b in zip(*trained.values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


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


# ---- method.feedback_scale=source: DRTP's and sparse DFA's scale as their code has it --------------
def test_feedback_bounds_by_hand():
    assert feedback_bound(10, 400) == 1 / 20                                                  # the paper's
    assert feedback_bound(10, 400, source="drtp") == pytest.approx(math.sqrt(6) / 20)         # kaiming_uniform_
    assert feedback_bound(10, 400, 0.3, "ssdfa") == pytest.approx(30 ** 0.25 / 20)             # C·k = 10·3
    assert feedback_bound(10, 400, 0.01, "ssdfa") == pytest.approx(10 ** 0.25 / 20)            # k = 1 at least
    assert feedback_bound(10, 400, 1.0, "ssdfa") == 1 / 20                                     # dense: the paper's


def test_drtp_at_the_source_scale_by_hand():
    """B_i ~ U(±√(6/n_i)) from the paper's draws (√6 × its B) and y* per example, summed over the batch:
    both paths give the hand computation, hidden gradients √6·batch × the paper's, the top's unchanged."""
    paper = make("drtp")
    source = FCNet(SIZES, "tanh", "drtp", [0], init="uniform", feedback_scale="source").double()
    torch.testing.assert_close(source.feedback, paper.feedback * math.sqrt(6), rtol=1e-6, atol=1e-6)   # (float32)
    for i, n in enumerate(source.hidden_widths):
        assert dfa_block(source, i).abs().max() <= math.sqrt(6 / n)
    x, y = batch()
    want = reference(source, x, y, "drtp", targets_over_batch=False)
    got = grads_by_autograd(source, x, y)
    assert mismatches(got, want) == [] and mismatches(grads_by_fast_step(source, x, y), want) == []
    ratio = [math.sqrt(6) * BATCH] * 2 + [1.0] + [math.sqrt(6) * BATCH] * 2 + [1.0]   # W1 W2 W3 b1 b2 b3
    for g, p, r in zip(got, grads_by_autograd(paper, x, y), ratio):
        torch.testing.assert_close(g, p * r, rtol=1e-6, atol=1e-9)


def test_sparse_dfa_at_the_source_scale_by_hand():
    """The sparse-DFA code's bound (C·k)^¼/√n_i: with C = 10 outputs and density 0.3 (k = 3), every
    nonzero entry of a binary B is ±30^¼/√(3·n_i), k per unit; a uniform B is the paper's draw, same
    mask, times 30^¼; both paths give the hand computation with it."""
    sizes = [6, 5, 4, 10]
    binary = FCNet(sizes, "tanh", "dfa", [0], feedback="binary", density=0.3, feedback_scale="source")
    for block, n in zip(binary.feedback[0].split(binary.hidden_widths, dim=1), binary.hidden_widths):
        assert ((block != 0).sum(0) == 3).all()
        torch.testing.assert_close(block[block != 0].abs(), torch.full((3 * n,), 30 ** 0.25 / math.sqrt(3 * n)))
    paper = make_net("dfa", sizes, density=0.3)
    source = make_net("dfa", sizes, density=0.3, feedback_scale="source")
    torch.testing.assert_close(source.feedback, paper.feedback * 30 ** 0.25, rtol=1e-6, atol=1e-6)
    x, y = batch(sizes)
    want = reference_grads(source, x, y, "dfa")
    assert mismatches(grads_by_autograd(source, x, y), want) == []
    assert mismatches(grads_by_fast_step(source, x, y), want) == []
    kw = dict(channels=[2], fc=[4], kernel=3, padding=1, pool=2, pool_stride=2, density=0.3)   # the conv net too
    conv = [ConvNet((1, 6, 6), 10, "dfa", [0], feedback_scale=scale, **kw) for scale in ("paper", "source")]
    torch.testing.assert_close(conv[1].feedback, conv[0].feedback * 30 ** 0.25, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("overrides, source", [
    (["method=drtp", "method.feedback_scale=source"], "drtp"),
    (["method=dfa", "method.density=0.1", "method.feedback_scale=source"], "ssdfa"),
    (["method=drtp"], None),
])
def test_feedback_scale_from_the_config(overrides, source):
    cfg = compose_config(*overrides)
    validate(cfg)
    assert build_model(cfg, (1, 28, 28), 10, [0]).feedback_source == source


@pytest.mark.parametrize("overrides, words", [
    (["method.density=0"], "method.density must be a number in (0, 1]"),
    (["method.density=1.5"], "method.density must be a number in (0, 1]"),
    (["method=fa", "method.feedback=binary"], "applies to method=dfa only, not method=fa"),
    (["method=drtp", "method.density=0.5"], "applies to method=dfa only"),
    (["method.feedback=ternary"], "method.feedback='ternary' is not supported"),
    (["method=usf", "model=conv", "data=cifar10"], "fully connected models only"),
    (["method=shallow", "init=zero"], "init=zero cannot train method=shallow"),
    (["method=frsf", "init=zero"], "sign(0) = 0"),
    (["method.feedback_scale=kaiming"], "method.feedback_scale='kaiming' is not supported"),
    (["method=bp", "method.feedback_scale=source"], "applies to method=drtp or dfa only, not method=bp"),
    (["method=frsf", "method.feedback_scale=source"], "applies to method=drtp or dfa only, not method=frsf"),
    (["method.feedback_scale=source"], "changes DFA's feedback only when it is sparse"),
    (["model=custom", "method.density=0.5", "method.feedback_scale=source"], "not model=custom"),
])
def test_senseless_settings_are_refused_in_one_sentence(overrides, words):
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        validate(compose_config(*overrides))
