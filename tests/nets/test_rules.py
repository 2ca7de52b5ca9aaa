"""The learning rules against hand-computed float64 math on tiny nets (DESIGN §1).

The reference below is written in the paper's column-vector notation, one example at a time,
independently of the implementation's batched row-vector code: a_i = W_i h_{i-1} + b_i,
h_i = tanh(a_i), e = sigmoid(a_y) − y, ΔW_i = δa_i h_{i-1}ᵀ summed over the batch.
"""
from __future__ import annotations

import pytest
import torch

from dfa_cli.training.losses import per_replica_loss
from dfa_cli.nets.fc import FCNet
from dfa_cli.nets.rules import DirectFeedback

SIZES = [5, 4, 3, 2]   # two hidden layers of different widths
BATCH = 6


def make_net(method: str, sizes=SIZES, seeds=(0,), **kw) -> FCNet:
    return FCNet(sizes, "tanh", method, list(seeds), init="uniform", **kw).double()


def batch(sizes=SIZES, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, BATCH, sizes[0], generator=g, dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (1, BATCH), generator=g)
    return x, y


def implementation_grads(net: FCNet, x, y) -> list[torch.Tensor]:
    """Gradients the rule gives through ``loss.backward()``: [dW_1.., db_1..] as paper-shaped matrices."""
    net.zero_grad(set_to_none=True)
    per_replica_loss(net(x), y, "bce").sum().backward()
    return [w.grad[0].T for w in net.weights] + [b.grad[0, 0] for b in net.biases]


def reference_grads(net: FCNet, x, y, method: str) -> list[torch.Tensor]:
    """Hand computation per DESIGN §1, example by example, in column-vector form."""
    W = [w[0].T.detach() for w in net.weights]          # paper's W_i: (n_i, n_{i-1})
    b = [bb[0, 0].detach() for bb in net.biases]
    L = len(W) - 1                                       # hidden layers
    dW = [torch.zeros_like(w) for w in W]
    db = [torch.zeros_like(v) for v in b]
    for n in range(x.shape[1]):
        h, target, e, fprime = example_forward(W, b, x[0, n], y[0, n], x.shape[1])
        delta = [None] * L
        if method == "bp":
            nxt = e
            for i in reversed(range(L)):
                delta[i] = (W[i + 1].T @ nxt) * fprime[i]
                nxt = delta[i]
        elif method == "fa":
            B = [net_fa_feedback(net, i + 1) for i in range(L)]   # B_{i+1}, shaped like W_{i+1}ᵀ
            nxt = e
            for i in reversed(range(L)):
                delta[i] = (B[i] @ nxt) * fprime[i]
                nxt = delta[i]
        elif method == "dfa":
            for i in range(L):
                delta[i] = (dfa_block(net, i) @ e) * fprime[i]
        elif method == "ifa":
            delta[0] = (dfa_block(net, 0) @ e) * fprime[0]
            for i in range(1, L):
                delta[i] = (W[i] @ delta[i - 1]) * fprime[i]
        accumulate(dW, db, delta, h, e)
    return dW + db


def example_forward(W, b, x_n, y_n, batch_size: int):
    """One example's forward pass: activations h_0..h_L, one-hot target, output error e (the batch
    mean of the loss) and tanh's derivative per hidden layer."""
    h = [x_n]
    for i in range(len(W) - 1):
        h.append(torch.tanh(W[i] @ h[-1] + b[i]))
    a_y = W[-1] @ h[-1] + b[-1]
    target = torch.zeros_like(a_y)
    target[y_n] = 1
    e = (torch.sigmoid(a_y) - target) / batch_size
    return h, target, e, [1 - hi ** 2 for hi in h[1:]]


def accumulate(dW, db, delta, h, e) -> None:
    """Add one example's gradients: δ_i h_{i-1}ᵀ and δ_i per hidden layer, e h_Lᵀ and e on top."""
    L = len(delta)
    for i in range(L):
        dW[i] += torch.outer(delta[i], h[i])
        db[i] += delta[i]
    dW[L] += torch.outer(e, h[L])
    db[L] += e


def net_fa_feedback(net: FCNet, layer: int) -> torch.Tensor:
    """FA's B for ``layer`` (0-based over all layers), shaped like the paper's W_layerᵀ."""
    return getattr(net, f"fa_feedback{layer}")[0]


def dfa_block(net: FCNet, i: int) -> torch.Tensor:
    """DFA/IFA's B_i (n_i × n_out) out of the concatenated feedback."""
    widths = net.hidden_widths
    start = sum(widths[:i])
    return net.feedback[0][:, start:start + widths[i]].T


@pytest.mark.parametrize("method", ["bp", "fa", "dfa", "ifa"])
def test_rule_matches_hand_computation(method):
    net, (x, y) = make_net(method), batch()
    # Forward weights from another seed, so FA's B (its initial W) differs from the current W.
    net.load_state_dict(make_net("bp", seeds=(1,)).state_dict(), strict=False)
    got, want = implementation_grads(net, x, y), reference_grads(net, x, y, method)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_bp_equals_plain_autograd():
    net, (x, y) = make_net("bp"), batch()
    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    n = len(net.weights)
    h = x[0]
    for i in range(n):
        a = torch.nn.functional.linear(h, params[i][0].T, params[n + i][0, 0])
        h = torch.tanh(a) if i < n - 1 else a
    onehot = torch.nn.functional.one_hot(y[0], SIZES[-1]).double()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(h, onehot, reduction="sum") / BATCH
    loss.backward()
    got = implementation_grads(net, x, y)
    for g, p in zip(got, [p.grad[0].T for p in params[:n]] + [p.grad[0, 0] for p in params[n:]]):
        torch.testing.assert_close(g, p)


@pytest.mark.parametrize("method", ["fa", "dfa", "ifa"])
def test_hidden_gradients_differ_from_bp_but_top_layer_is_the_same(method):
    # Forward weights from another seed: at initialisation FA's B *is* W, so FA = BP there.
    bp, other = make_net("bp", seeds=(1,)), make_net(method)
    other.load_state_dict(bp.state_dict(), strict=False)    # same forward weights
    x, y = batch()
    g_bp, g_other = implementation_grads(bp, x, y), implementation_grads(other, x, y)
    n = len(bp.weights)
    for i in range(n - 1):   # every hidden weight matrix moves differently: no silent BP fallback
        assert not torch.allclose(g_bp[i], g_other[i]), f"hidden layer {i} got BP's gradient"
    torch.testing.assert_close(g_bp[n - 1], g_other[n - 1])      # output weights learn from e
    torch.testing.assert_close(g_bp[2 * n - 1], g_other[2 * n - 1])


def test_fa_and_dfa_coincide_with_one_hidden_layer():
    sizes = [5, 4, 3]
    fa, dfa = make_net("fa", sizes), make_net("dfa", sizes)
    dfa.load_state_dict({k: v for k, v in fa.state_dict().items() if "feedback" not in k}, strict=False)
    with torch.no_grad():   # FA's B for the output layer (n_1 × n_out) = DFA's B_1ᵀ layout
        fa.fa_feedback1.copy_(dfa.feedback.transpose(1, 2))
    x, y = batch(sizes)
    for g_fa, g_dfa in zip(implementation_grads(fa, x, y), implementation_grads(dfa, x, y)):
        torch.testing.assert_close(g_fa, g_dfa)


def test_concatenated_feedback_columns_reach_each_layer_exactly_once():
    widths, n_out, rows = [3, 5, 2], 4, 2
    # Column j of the concatenated B holds the value j + 1 in every row; e is 1 in one row only,
    # so each tap's gradient shows exactly which columns it was handed.
    feedback = torch.arange(1.0, sum(widths) + 1).expand(1, n_out, -1).clone()
    taps = [torch.zeros(1, rows, w, requires_grad=True) for w in widths]
    logits = torch.zeros(1, rows, n_out, requires_grad=True)
    e = torch.zeros(1, rows, n_out)
    e[..., 0] = 1
    DirectFeedback.apply(logits, feedback, *taps).backward(e)
    received = torch.cat([t.grad[0, 0] for t in taps])
    assert received.tolist() == list(range(1, sum(widths) + 1))
    torch.testing.assert_close(logits.grad, e)


def test_equal_width_layers_get_independent_feedback():
    net = make_net("dfa", [5, 4, 4, 4, 2])
    blocks = [dfa_block(net, i) for i in range(3)]
    assert not torch.equal(blocks[0], blocks[1]) and not torch.equal(blocks[1], blocks[2])


def test_dfa_feedback_scale_follows_receiving_layer_width():
    net = FCNet([10, 400, 25, 10], "tanh", "dfa", [0])
    b1, b2 = net.feedback[0][:, :400], net.feedback[0][:, 400:]
    assert b1.abs().max() <= 1 / 400 ** 0.5 and b1.abs().max() > 0.9 / 400 ** 0.5
    assert b2.abs().max() <= 1 / 25 ** 0.5 and b2.abs().max() > 0.8 / 25 ** 0.5


def test_fa_feedback_is_the_initial_random_weight_and_stays_fixed():
    net = FCNet([5, 4, 3, 2], "tanh", "fa", [0], init="paper")     # paper: zero above layer 1
    assert all(torch.count_nonzero(w) == 0 for w in net.weights[1:])
    reference = FCNet([5, 4, 3, 2], "tanh", "bp", [0], init="uniform")
    for i, w in enumerate(reference.weights):
        torch.testing.assert_close(getattr(net, f"fa_feedback{i}"), w.detach())
    before = [b.clone() for b in net.buffers()]
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-2)
    x, y = batch()
    for _ in range(3):
        opt.zero_grad()
        per_replica_loss(net(x.float()), y, "bce").sum().backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, net.buffers()))


def test_dropout_mask_multiplies_the_feedback_signal():
    net = make_net("dfa", dropout_hidden=0.5)
    x, y = batch()
    torch.manual_seed(7)
    implementation_grads(net, x, y)
    got = [w.grad[0] for w in net.weights[:2]]
    # Redraw the same masks (same generator state, same order) and recompute by hand.
    torch.manual_seed(7)
    masks = [(torch.rand(1, BATCH, n, dtype=torch.float64) >= 0.5).double() / 0.5 for n in SIZES[1:3]]
    W = [w.detach() for w in net.weights]
    b = [bb.detach() for bb in net.biases]
    h0 = x
    h1 = torch.tanh(h0 @ W[0] + b[0]) * masks[0]
    h2 = torch.tanh(h1 @ W[1] + b[1]) * masks[1]
    e = (torch.sigmoid(h2 @ W[2] + b[2]) - torch.nn.functional.one_hot(y, 2)) / BATCH
    fb = net.feedback.detach()
    d1 = (e @ fb[:, :, :4]) * (1 - (h1 / masks[0].clamp(min=1)) ** 2) * masks[0]
    d2 = (e @ fb[:, :, 4:]) * (1 - (h2 / masks[1].clamp(min=1)) ** 2) * masks[1]
    torch.testing.assert_close(got[0], (h0.transpose(1, 2) @ d1)[0])
    torch.testing.assert_close(got[1], (h1.transpose(1, 2) @ d2)[0])
    dropped = masks[0][0] == 0
    assert dropped.any()


def test_stacked_replicas_get_their_own_gradients():
    stacked = make_net("dfa", seeds=(0, 1))
    x, y = batch()
    x2, y2 = torch.cat([x, x.flip(1)]), torch.cat([y, y.flip(1)])
    stacked.zero_grad()
    per_replica_loss(stacked(x2), y2, "bce").sum().backward()
    for r, (seed, xr, yr) in enumerate([(0, x, y), (1, x.flip(1), y.flip(1))]):
        single = make_net("dfa", seeds=(seed,))
        torch.testing.assert_close(single.feedback[0], stacked.feedback[r])
        for g_single, p in zip(implementation_grads(single, xr, yr),
                               [w.grad[r].T for w in stacked.weights] + [b.grad[r, 0] for b in stacked.biases]):
            torch.testing.assert_close(g_single, p)


def test_seeds_decide_feedback():
    a, b, c = (FCNet([5, 4, 3, 2], "tanh", "dfa", [s]) for s in (0, 0, 1))
    assert torch.equal(a.feedback, b.feedback) and not torch.equal(a.feedback, c.feedback)


def test_feedback_is_saved_and_moved_with_the_model():
    net = FCNet([5, 4, 3, 2], "tanh", "dfa", [0])
    assert "feedback" in net.state_dict()
    assert net.double().feedback.dtype == torch.float64


def _train_steps(method: str, steps: int = 60):
    torch.manual_seed(0)
    net = FCNet([8, 16, 16, 3], "tanh", method, [0], init="zero")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 8, generator=g)
    y = (x[0, :, :3].argmax(-1))[None]
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = per_replica_loss(net(x), y, "bce").sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return net, losses


def test_dfa_breaks_symmetry_from_zero_weights_where_bp_cannot():
    dfa, dfa_losses = _train_steps("dfa")
    bp, bp_losses = _train_steps("bp")
    assert all(torch.count_nonzero(w) > 0 for w in dfa.weights)
    assert dfa_losses[-1] < 0.7 * dfa_losses[0]
    # BP from zero: every hidden weight (and the output weights) stay exactly zero.
    assert all(torch.count_nonzero(w) == 0 for w in bp.weights)
    assert bp_losses[-1] > dfa_losses[-1]


def test_ifa_from_zero_weights_would_be_stuck_so_paper_init_keeps_it_random():
    ifa, _ = _train_steps("ifa", steps=10)
    assert torch.count_nonzero(ifa.weights[0]) > 0
    assert torch.count_nonzero(ifa.weights[1]) == 0     # W_2 never receives a signal from zero
    assert FCNet([8, 16, 16, 3], "tanh", "ifa", [0], init="paper").init == "uniform"
