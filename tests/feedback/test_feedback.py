"""The feedback API (dfa_cli.feedback): a model one writes oneself trains by the same rules as the
built-in nets, DFA computes no Wᵀδ between points, and what it cannot train is refused."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from dfa_cli import feedback
from dfa_cli.examples.nets import LeNet, ResMLP
from dfa_cli.training.losses import per_replica_loss
from dfa_cli.nets.fc import FCNet

from custom_nets import MLP, WithLayerNorm

SIZES = (6, 5, 5, 4, 3)   # three equal-ish hidden layers: DFA and BP differ below the top one


def batch(n=4, d=6, classes=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


def mlp(rule="dfa", sizes=SIZES, seed=0):
    torch.manual_seed(seed)
    net = feedback.set_rule(MLP(sizes).double(), rule)
    net(batch(d=sizes[0])[0])           # draws B (a training pass of the first batch's shape)
    net.zero_grad(set_to_none=True)
    return net


def bce_step(net, x, y):
    """The engine's loss (sigmoid + BCE, batch mean) and backward; FCNet's logits carry a replica axis."""
    logits = net(x)
    logits = logits if logits.dim() == 3 else logits.unsqueeze(0)
    per_replica_loss(logits, y.unsqueeze(0), "bce").sum().backward()


def grads(net):
    return [p.grad for p in net.parameters()]


def copy_fcnet_into(fc: FCNet, net: MLP) -> None:
    """The FCNet's weights (stored as Wᵀ with a replica axis) and B into the user-written MLP."""
    with torch.no_grad():
        for i, layer in enumerate(net.layers):
            layer.weight.copy_(fc.weights[i][0].T)
            layer.bias.copy_(fc.biases[i][0, 0])
        if net.out.feedback is not None and hasattr(fc, "feedback"):
            net.out.feedback.copy_(fc.feedback[0])


def fcnet_grads(fc: FCNet) -> list[torch.Tensor]:
    return [g for w, b in zip(fc.weights, fc.biases) for g in (w.grad[0].T, b.grad[0, 0])]


# ---- the same rule as the built-in nets -----------------------------------------------------------
@pytest.mark.parametrize("rule", ["dfa", "bp"])
def test_a_user_written_mlp_gets_fcnets_updates_in_float64(rule):
    fc = FCNet(list(SIZES), "tanh", rule, [3], init="uniform").double()
    net = mlp(rule)
    copy_fcnet_into(fc, net)
    x, y = batch()
    bce_step(fc, x, y)
    bce_step(net, x, y)
    for ours, theirs in zip(grads(net), fcnet_grads(fc)):
        # the same products in other kernels (addmm and mm here, baddbmm and bmm there) round
        # differently in the last bit; a wrong rule or a misplaced B differs by ~1e-2
        torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-16)


def test_under_bp_the_points_change_nothing_autograd_computes():
    net, plain = mlp("bp"), mlp("bp")
    x, y = batch()
    bce_step(net, x, y)
    h = x
    for layer in plain.layers[:-1]:          # the same net, its points left out
        h = torch.tanh(layer(h))
    per_replica_loss(plain.layers[-1](h).unsqueeze(0), y.unsqueeze(0), "bce").sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(grads(net), grads(plain)))


def test_dfa_differs_from_bp_below_the_top_layer():
    dfa, bp = mlp("dfa"), mlp("bp")
    x, y = batch()
    bce_step(dfa, x, y)
    bce_step(bp, x, y)
    top_w, top_b = -2, -1
    assert torch.equal(grads(dfa)[top_w], grads(bp)[top_w]) and torch.equal(grads(dfa)[top_b], grads(bp)[top_b])
    for i in range(len(SIZES) - 2):          # every hidden layer: DFA's e B_i, not BP's Wᵀδ
        assert (grads(dfa)[2 * i] - grads(bp)[2 * i]).abs().max() > 1e-4


@pytest.mark.parametrize("loss", ["ce", "mse", "cubic"])
def test_e_is_the_gradient_of_whatever_loss_was_used(loss):
    """A first block without an activation makes its weight gradient (e B_1)ᵀ x exactly."""
    torch.manual_seed(0)
    lin1, lin2, head = nn.Linear(6, 5).double(), nn.Linear(5, 4).double(), nn.Linear(4, 3).double()
    p1, p2 = feedback.Point(), feedback.Point()
    out = feedback.Output([p1, p2])
    x, y = batch()
    loss_of = {"ce": lambda z: F.cross_entropy(z, y), "mse": lambda z: F.mse_loss(z, F.one_hot(y, 3).double()),
               "cubic": lambda z: z.pow(3).mean()}[loss]
    h1 = p1(lin1(x))
    h2 = p2(torch.tanh(lin2(h1)))
    logits = out(head(h2))
    loss_of(logits).backward()
    z = logits.detach().requires_grad_()
    (e,) = torch.autograd.grad(loss_of(z), z)
    b1 = out.feedback[:, :5]
    torch.testing.assert_close(lin1.weight.grad, (e @ b1).T @ x, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(head.weight.grad, e.T @ h2.detach(), rtol=1e-13, atol=1e-15)


def test_two_forward_passes_before_one_backward_keep_their_own_signals():
    x1, y1 = batch(seed=1)
    x2, y2 = batch(seed=2)
    together, apart = mlp(), mlp()
    (per_replica_loss(together(x1).unsqueeze(0), y1.unsqueeze(0), "bce")
     + per_replica_loss(together(x2).unsqueeze(0), y2.unsqueeze(0), "bce")).sum().backward()
    bce_step(apart, x1, y1)
    bce_step(apart, x2, y2)
    for a, b in zip(grads(together), grads(apart)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-16)


def test_any_torch_optimizer_steps_on_the_rules_gradients():
    net = mlp()
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    bce_step(net, *batch())
    opt.step()
    for p, p0 in zip(net.parameters(), before):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * p.grad, rtol=0, atol=1e-15)


# ---- no Wᵀδ between points -------------------------------------------------------------------------
class BackwardOps(TorchDispatchMode):
    """Counts matrix products and records which convolution gradients are asked for."""

    def __init__(self):
        super().__init__()
        self.matmuls, self.conv_masks = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default):
            self.matmuls += 1
        if func is torch.ops.aten.convolution_backward.default:
            self.conv_masks.append(list(args[10]))
        return func(*args, **(kwargs or {}))


def backward_ops(net, x, y) -> BackwardOps:
    loss = per_replica_loss(net(x).unsqueeze(0), y.unsqueeze(0), "bce").sum()
    with BackwardOps() as ops:
        loss.backward()
    return ops


def test_dfa_computes_no_input_gradient_between_points():
    n_layers = len(SIZES) - 1
    # DFA: one e @ [B_1 … B_L], then each layer's weight gradient hᵀδ, nothing else
    assert backward_ops(mlp("dfa"), *batch()).matmuls == 1 + n_layers
    # BP, for contrast: the same weight gradients plus δ Wᵀ below every layer but the first
    assert backward_ops(mlp("bp"), *batch()).matmuls == n_layers + (n_layers - 1)


def test_a_conv_net_under_dfa_asks_no_conv_for_its_input_gradient():
    torch.manual_seed(0)
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
    dfa, bp = feedback.set_rule(LeNet(), "dfa"), feedback.set_rule(LeNet(), "bp")
    ops = backward_ops(dfa, x, y)
    assert ops.conv_masks and all(mask[0] is False for mask in ops.conv_masks)
    assert ops.matmuls == 1 + 3                   # e @ B, and three FC weight gradients
    assert [m[0] for m in backward_ops(bp, x, y).conv_masks] == [True, False]   # BP: into conv2's input


# ---- the feedback matrices ----------------------------------------------------------------------
def test_a_conv_point_gets_one_dense_b_over_its_whole_map():
    torch.manual_seed(0)
    net = feedback.set_rule(LeNet(), "dfa")
    out = net[-1]
    x = torch.rand(2, 1, 28, 28)
    assert isinstance(net[3], feedback.Point)
    pool1 = net[:3](x)                   # conv → tanh → pool: the first point's map
    pool1.retain_grad()
    logits = net[3:](pool1)
    assert out.widths == [6 * 14 * 14, 16 * 5 * 5, 120, 84]
    assert out.feedback.shape == (10, sum(out.widths))
    e = torch.rand(2, 10)
    logits.backward(e)
    expected = (e @ out.feedback[:, :1176]).reshape(2, 6, 14, 14)
    torch.testing.assert_close(pool1.grad, expected)
    assert pool1.grad[0, 0].std() > 0     # one B entry per position: not one value broadcast per channel


def test_points_of_equal_width_get_independent_b_at_the_papers_scale():
    torch.manual_seed(0)
    net = feedback.set_rule(ResMLP(width=64, blocks=3), "dfa")
    net(torch.rand(2, 1, 28, 28))
    blocks = net.out.feedback.split(net.out.widths, dim=1)
    assert net.out.widths == [64] * 4
    for i in range(4):
        assert blocks[i].abs().max() <= 1 / math.sqrt(64)
        assert blocks[i].abs().max() > 0.9 / math.sqrt(64)
        for j in range(i):
            assert not torch.allclose(blocks[i], blocks[j])


def test_a_token_by_channel_map_gets_dense_b():
    torch.manual_seed(0)
    proj, head = nn.Linear(4, 8), nn.Linear(5 * 8, 3)
    point = feedback.Point()
    out = feedback.Output([point])
    h = point(torch.tanh(proj(torch.rand(2, 5, 4))))           # (batch, tokens, channels)
    out(head(h.flatten(1)))
    assert out.feedback.shape == (3, 5 * 8) and out.widths == [40]


def test_b_is_a_buffer_drawn_from_the_seed_and_restored_by_state_dict():
    net = mlp(seed=0)
    assert "out.feedback" in net.state_dict()
    again = mlp(seed=0)
    assert torch.equal(net.out.feedback, again.out.feedback)
    other = mlp(seed=1)
    assert not torch.equal(net.out.feedback, other.out.feedback)
    fresh = MLP(SIZES).double()
    assert fresh.out.feedback is None                  # not drawn before a pass …
    fresh.load_state_dict(net.state_dict())            # … yet a checkpoint loads into it
    assert torch.equal(fresh.out.feedback, net.out.feedback) and fresh.out.widths == net.out.widths
    assert net.float().out.feedback.dtype == torch.float32


def test_outside_training_the_points_and_the_output_are_identities():
    dfa, bp = mlp("dfa"), mlp("bp")
    x, _ = batch()
    dfa.eval()
    bp.eval()
    assert torch.equal(dfa(x), bp(x))
    dfa.train()
    with torch.no_grad():
        assert torch.equal(dfa(x), bp(x))
    assert dfa.out._taps == {}


# ---- rules: shallow, DRTP, FA -------------------------------------------------------------------
def test_shallow_trains_only_the_top_layer():
    net = mlp("shallow")
    bce_step(net, *batch())
    assert [p.grad is not None for p in net.parameters()] == [False] * 6 + [True, True]


def test_drtp_feeds_the_points_the_scaled_target_not_e():
    torch.manual_seed(0)
    lin, head = nn.Linear(6, 5).double(), nn.Linear(5, 3).double()
    point = feedback.Point()
    out = feedback.Output([point])
    out.rule = "drtp"
    x, y = batch()
    out.set_targets(y)
    out(head(point(lin(x)))).pow(2).sum().backward()
    target = F.one_hot(y, 3).double() / len(y)
    torch.testing.assert_close(lin.weight.grad, (target @ out.feedback).T @ x)


def test_drtp_targets_are_not_divided_by_the_batch_under_the_summed_error():
    """dfa-run sets ``reduction`` from loss.reduction: under ``sum`` the targets stand as e does, per example."""
    torch.manual_seed(0)
    lin, head = nn.Linear(6, 5).double(), nn.Linear(5, 3).double()
    point = feedback.Point()
    out = feedback.Output([point])
    out.rule, out.reduction = "drtp", "sum"
    x, y = batch()
    out.set_targets(y)
    out(head(point(lin(x)))).pow(2).sum().backward()
    torch.testing.assert_close(lin.weight.grad, (F.one_hot(y, 3).double() @ out.feedback).T @ x)


def test_fa_with_b_equal_to_w_is_bp_and_with_its_initial_copy_is_not():
    x, y = torch.rand(2, 1, 28, 28, dtype=torch.float64), torch.tensor([1, 4])
    torch.manual_seed(0)
    bp = feedback.set_rule(LeNet().double(), "bp")
    torch.manual_seed(0)
    fa = feedback.set_rule(LeNet().double(), "fa")
    layers = [m for m in fa.modules() if isinstance(m, (feedback.LinearFA, feedback.Conv2dFA))]
    assert len(layers) == 5
    with torch.no_grad():
        for m in layers:   # a B away from W: FA's updates below the top layer differ from BP's
            m.fa_feedback.copy_(torch.randn_like(m.fa_feedback))
    bce_step(bp, x, y)
    bce_step(fa, x, y)
    assert (grads(fa)[0] - grads(bp)[0]).abs().max() > 1e-6
    assert torch.equal(grads(fa)[-2], grads(bp)[-2])
    fa.zero_grad()
    with torch.no_grad():
        for m in layers:   # B = W: FA sends exactly what BP sends
            m.fa_feedback.copy_(m.weight)
    bce_step(fa, x, y)
    for a, b in zip(grads(fa), grads(bp)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_fa_convolutions_with_stride_dilation_groups_and_valid_padding_are_bp_when_b_is_w():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Tanh(),
                        nn.Conv2d(4, 4, 3, dilation=2, groups=2, padding="valid"), nn.Tanh(),
                        nn.Flatten(), nn.Linear(4 * 1 * 1, 3)).double()
    x, y = torch.rand(2, 2, 9, 9, dtype=torch.float64), torch.tensor([0, 2])
    bce_step(net, x, y)
    bp = [g.clone() for g in grads(net)]
    net.zero_grad()
    feedback.set_rule(net, "fa")              # B = W now: FA must send exactly what BP sends
    bce_step(net, x, y)
    for a, b in zip(grads(net), bp):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_fa_takes_b_from_the_initial_weights_and_keeps_it():
    torch.manual_seed(0)
    net = MLP((6, 5, 3)).double()
    initial = net.layers[0].weight.detach().clone()
    feedback.set_rule(net, "fa")
    assert isinstance(net.layers[0], feedback.LinearFA) and torch.equal(net.layers[0].fa_feedback, initial)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    bce_step(net, *batch(classes=3))
    opt.step()
    feedback.set_rule(net, "bp")
    feedback.set_rule(net, "fa")        # back to FA: the first copy stays
    assert torch.equal(net.layers[0].fa_feedback, initial)
    assert not torch.equal(net.layers[0].weight, initial)


# ---- what the API refuses, in one sentence -----------------------------------------------------
def test_fa_refuses_weights_it_does_not_cover():
    with pytest.raises(feedback.FeedbackError, match=r"norm \(LayerNorm\) has weights of its own"):
        feedback.set_rule(WithLayerNorm(), "fa")


@pytest.mark.parametrize("rule, words", [("ifa", "IFA carries the error forward"),
                                         ("usf", "sign-symmetric"), ("sgd", "unknown rule")])
def test_rules_not_offered_are_refused(rule, words):
    with pytest.raises(feedback.FeedbackError, match=words):
        feedback.set_rule(MLP(), rule)


def test_direct_rules_need_an_output_and_every_point_listed():
    with pytest.raises(feedback.FeedbackError, match="no feedback.Output"):
        feedback.set_rule(nn.Sequential(nn.Linear(3, 3)), "dfa")
    net = MLP()
    net.extra = feedback.Point()
    with pytest.raises(feedback.FeedbackError, match="not listed"):
        feedback.set_rule(net, "dfa")


def test_a_point_left_out_of_a_pass_or_reached_twice_is_one_sentence():
    net = mlp()
    x, _ = batch()
    with pytest.raises(feedback.FeedbackError, match=r"point\(s\) 2 were not reached"):
        h = x
        for layer, point in zip(net.layers[:2], net.points[:2]):
            h = point(torch.tanh(layer(h)))
        net.out(net.layers[-1](torch.zeros(4, 4, dtype=torch.float64)))
    net.points[0](torch.tanh(net.layers[0](x)))
    with pytest.raises(feedback.FeedbackError, match="reached twice"):
        net.points[0](torch.tanh(net.layers[0](x)))
    net.out.reset()                     # after a failed pass: the next one trains as usual
    bce_step(net, *batch())


def test_a_point_on_the_input_or_without_the_batch_first_is_refused():
    point, lin = feedback.Point(), nn.Linear(3, 2)
    out = feedback.Output([point])
    with pytest.raises(feedback.FeedbackError, match="does not depend on any trainable parameter"):
        out(lin(point(torch.rand(4, 3))))
    with pytest.raises(feedback.FeedbackError, match="batch first"):
        tap = point(torch.tanh(lin(torch.rand(5, 4, 3))))     # (time, batch, …)
        out(nn.Linear(2, 2)(tap[0]))


def test_a_pass_with_other_shapes_than_the_first_is_refused():
    proj, head = nn.Linear(4, 8), nn.Linear(8, 3)
    point = feedback.Point()
    out = feedback.Output([point])
    out(head(point(torch.tanh(proj(torch.rand(2, 5, 4)))).mean(1))).sum().backward()   # B: 5 tokens x 8
    with pytest.raises(feedback.FeedbackError, match="shapes must stay those of the first pass"):
        out(head(point(torch.tanh(proj(torch.rand(2, 6, 4)))).mean(1)))


def test_sequential_places_points_after_each_hidden_block():
    net = feedback.sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.1),
                              nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "BatchNorm1d", "Tanh", "Dropout", "Point", "Linear", "Tanh", "Point",
                     "Linear", "Output"]
    with pytest.raises(feedback.FeedbackError, match="at least two layers with weights"):
        feedback.sequential(nn.Linear(3, 3), nn.Tanh())
