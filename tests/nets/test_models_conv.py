"""The conv net ("CONV tanh", DESIGN §2) and its rules, against hand computations in float64.

The reference below computes convolutions, pooling and their backward passes with explicit
im2col (``F.unfold``/``F.fold``) and matrix products, one replica, without autograd, so it shares
no code path with the implementation (grouped ``conv2d``, ``max_pool2d``, autograd Functions).
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from dfa_cli.config import validate
from dfa_cli.runs.errors import UserError
from dfa_cli.training.losses import per_replica_loss
from dfa_cli.nets.conv import ConvNet
from dfa_cli.network import build_model
from dfa_cli.runs.records import SUMMARY
from dfa_cli.nets.rules import Conv2dFA
from dfa_cli.run import train

from conftest import compose_config, run_cli

# A tiny conv net through the same code path: 2×8×8 → conv3x3 3 → pool 3/2 (3×3×3) → conv3x3 4
# → pool (4×1×1) → FC 5 → 3. Overlapping pooling windows, so pool backward must accumulate.
TINY = dict(channels=(3, 4), kernel=3, padding=1, pool=3, pool_stride=2, fc=(5,))
SHAPE, N_OUT, BATCH = (2, 8, 8), 3, 4


def tiny_net(method, seeds=(0,), init="uniform", **kw) -> ConvNet:
    return ConvNet(SHAPE, N_OUT, method, list(seeds), init=init, **{**TINY, **kw}).double()


def tiny_batch(replicas=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(replicas, BATCH, math.prod(SHAPE), generator=g, dtype=torch.float64)
    y = torch.randint(0, N_OUT, (replicas, BATCH), generator=g)
    return x, y


def grads(net: ConvNet, x, y, replica: int = 0) -> list[torch.Tensor]:
    """[conv W…, conv b…, fc W…, fc b…] of one replica after ``loss.backward()``."""
    net.zero_grad(set_to_none=True)
    per_replica_loss(net(x), y, "bce").sum().backward()
    return ([w.grad[replica] for w in net.conv_weights] + [b.grad[replica] for b in net.conv_biases]
            + [w.grad[replica] for w in net.weights] + [b.grad[replica, 0] for b in net.biases])


# ---- the hand computation ----------------------------------------------------------------------
def conv_forward(h, W, b, pad):
    """Convolution as im2col + matmul: returns the output map and the columns (for dW)."""
    n, _, hh, ww = h.shape
    co, _, k, _ = W.shape
    cols = F.unfold(h, k, padding=pad)                              # (n, C_in·k·k, L)
    out = W.reshape(co, -1) @ cols + b[:, None]
    return out.reshape(n, co, hh + 2 * pad - k + 1, ww + 2 * pad - k + 1), cols


def pool_forward(h, k, s):
    """Max-pooling: pooled map and, per window, the index of its maximum."""
    n, c, hh, ww = h.shape
    windows = F.unfold(h, k, stride=s).reshape(n, c, k * k, -1)
    value, index = windows.max(2)
    ho, wo = (hh - k) // s + 1, (ww - k) // s + 1
    return value.reshape(n, c, ho, wo), index


def pool_backward(g, index, shape, k, s):
    """Each window's gradient goes to its maximum; overlapping windows add up (fold sums)."""
    n, c, hh, ww = shape
    routed = F.one_hot(index, k * k).permute(0, 1, 3, 2).to(g.dtype) * g.reshape(n, c, 1, -1)
    return F.fold(routed.reshape(n, c * k * k, -1), (hh, ww), k, stride=s)


def conv_backward_input(delta, K, shape, pad):
    """Transposed convolution of ``delta`` with kernels ``K`` (col2im of Kᵀ·δ)."""
    n, co = delta.shape[:2]
    k = K.shape[-1]
    cols = K.reshape(co, -1).T @ delta.reshape(n, co, -1)
    return F.fold(cols, shape[2:], k, padding=pad)


def reference_grads(net: ConvNet, x, y, method: str, masks=None) -> list[torch.Tensor]:
    """DESIGN §1 on the conv net, for replica 0; ``masks``: [input, conv…, fc…] dropout masks or None."""
    k, s, pad = net.pool, net.pool_stride, net.padding
    cw = [w[0].detach() for w in net.conv_weights]
    cb = [b[0].detach() for b in net.conv_biases]
    fw = [w[0].detach() for w in net.weights]                       # row-vector: (n_in, n_out)
    fb = [b[0, 0].detach() for b in net.biases]
    n_conv, n_fc = len(cw), len(fw)
    masks = masks or [None] * (1 + n_conv + n_fc - 1)
    h = x[0] * masks[0] if masks[0] is not None else x[0]
    h = h.reshape(len(h), *net.input_shape)
    conv = []                                                       # per conv layer: input, cols, tanh, mask, index
    for i in range(n_conv):
        a, cols = conv_forward(h, cw[i], cb[i], pad)
        t = torch.tanh(a)
        m = masks[1 + i]
        dropped = t * m if m is not None else t
        h, index = pool_forward(dropped, k, s)
        conv.append((cols, t, m, index, dropped.shape, h.shape))
    z = [h.reshape(len(h), -1)]
    fc_masks = []
    for j in range(n_fc - 1):
        u = torch.tanh(z[-1] @ fw[j] + fb[j])
        m = masks[1 + n_conv + j]
        fc_masks.append((u, m))
        z.append(u * m if m is not None else u)
    logits = z[-1] @ fw[-1] + fb[-1]
    e = (torch.sigmoid(logits) - F.one_hot(y[0], logits.shape[-1]).double()) / len(logits)

    d_conv_w, d_conv_b = [None] * n_conv, [None] * n_conv
    d_fc_w, d_fc_b = [None] * n_fc, [None] * n_fc
    d_fc_w[-1], d_fc_b[-1] = z[-1].T @ e, e.sum(0)                  # the output layer learns from e

    def fc_delta(j, g):                                             # g: gradient at FC hidden tap j
        u, m = fc_masks[j]
        return g * (m if m is not None else 1) * (1 - u ** 2)

    def conv_delta(i, g):                                           # g: gradient at pooled map i
        cols, t, m, index, pre_shape, _ = conv[i]
        g = pool_backward(g, index, pre_shape, k, s)
        return g * (m if m is not None else 1) * (1 - t ** 2)

    def conv_update(i, delta):
        cols = conv[i][0]
        co = delta.shape[1]
        d_conv_w[i] = torch.einsum("nol,nkl->ok", delta.reshape(len(delta), co, -1), cols).reshape(cw[i].shape)
        d_conv_b[i] = delta.sum((0, 2, 3))

    if method == "dfa":
        B = net.feedback[0]
        offsets = [0, *torch.tensor(net.hidden_widths).cumsum(0).tolist()]
        signals = [e @ B[:, offsets[t]:offsets[t + 1]] for t in range(len(net.hidden_widths))]
        for i in range(n_conv):
            conv_update(i, conv_delta(i, signals[i].reshape(conv[i][5])))
        for j in range(n_fc - 1):
            delta = fc_delta(j, signals[n_conv + j])
            d_fc_w[j], d_fc_b[j] = z[j].T @ delta, delta.sum(0)
    else:                                                           # bp / fa: layer by layer
        fc_back = fw if method == "bp" else [getattr(net, f"fa_feedback{j}")[0] for j in range(n_fc)]
        conv_back = cw if method == "bp" else [getattr(net, f"fa_conv_feedback{i}")[0] for i in range(n_conv)]
        delta = e
        for j in reversed(range(n_fc - 1)):
            delta = fc_delta(j, delta @ fc_back[j + 1].T)
            d_fc_w[j], d_fc_b[j] = z[j].T @ delta, delta.sum(0)
        g = (delta @ fc_back[0].T).reshape(conv[-1][5])
        for i in reversed(range(n_conv)):
            delta = conv_delta(i, g)
            conv_update(i, delta)
            if i > 0:
                g = conv_backward_input(delta, conv_back[i], conv[i - 1][5], pad)
    return d_conv_w + d_conv_b + d_fc_w + d_fc_b


def with_other_forward_weights(net: ConvNet) -> ConvNet:
    """Forward weights from another seed, so FA's B (its initial W) differs from the current W."""
    net.load_state_dict(tiny_net("bp", seeds=(5,)).state_dict(), strict=False)
    return net


# ---- the paper's network ------------------------------------------------------------------------
def test_paper_conv_feedback_shapes_for_cifar10():
    cfg = compose_config("model=conv", "data=cifar10", "method=dfa")
    net = build_model(cfg, (3, 32, 32), 10, [0])
    assert net.map_shapes == [(96, 15, 15), (128, 7, 7), (256, 3, 3)]
    assert net.hidden_widths == [21600, 6272, 2304, 2048, 2048]
    assert net.feedback.shape == (1, 10, 21600 + 6272 + 2304 + 2048 + 2048)
    start = 0
    for n in net.hidden_widths:      # each B_i: 10 × n_i, U(±1/√n_i) with n_i the receiving map's size
        block = net.feedback[0, :, start:start + n]
        assert block.shape == (10, n)
        assert 0.99 / math.sqrt(n) < block.abs().max() <= 1 / math.sqrt(n)
        start += n
    assert [tuple(w.shape[1:]) for w in net.conv_weights] == [(96, 3, 5, 5), (128, 96, 5, 5), (256, 128, 5, 5)]
    assert [tuple(w.shape[1:]) for w in net.weights] == [(2304, 2048), (2048, 2048), (2048, 10)]
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(3, 3072)).shape == (1, 3, 10)


def test_paper_conv_for_cifar100_and_mnist():
    assert ConvNet((3, 32, 32), 100, "dfa", [0]).feedback.shape == (1, 100, 34272)
    mnist = ConvNet((1, 28, 28), 10, "dfa", [0])     # works: 28 → 13 → 6 → 2
    assert mnist.hidden_widths == [96 * 13 * 13, 128 * 6 * 6, 256 * 2 * 2, 2048, 2048]


def test_paper_init_zero_for_fa_dfa_and_fa_kernels_are_the_initial_weights():
    fa = tiny_net("fa", init="paper")
    dfa = tiny_net("dfa", init="paper")
    bp = tiny_net("bp", init="paper")
    assert fa.init == dfa.init == "zero" and bp.init == "uniform"
    assert all(torch.count_nonzero(p) == 0 for p in [*fa.parameters(), *dfa.parameters()])
    for i, w in enumerate(bp.conv_weights):            # same seed: FA's B = BP's random start
        torch.testing.assert_close(getattr(fa, f"fa_conv_feedback{i}"), w.detach())
        bound = 1 / math.sqrt(w.shape[2] * w.shape[3] * w.shape[4])   # fan_in = C_in·k·k
        assert 0.9 * bound < w.abs().max() <= bound
    for j, w in enumerate(bp.weights):
        torch.testing.assert_close(getattr(fa, f"fa_feedback{j}"), w.detach())


def test_feedback_is_state_seeded_per_replica():
    a, b, c = (tiny_net("dfa", seeds=(s,)) for s in (0, 0, 1))
    assert "feedback" in a.state_dict()
    assert torch.equal(a.feedback, b.feedback) and not torch.equal(a.feedback, c.feedback)
    fa = tiny_net("fa")
    assert {f"fa_conv_feedback{i}" for i in range(2)} <= set(fa.state_dict())


# ---- the rules against the hand computation -----------------------------------------------------
@pytest.mark.parametrize("method", ["bp", "fa", "dfa"])
def test_conv_rule_matches_hand_computation(method):
    net = with_other_forward_weights(tiny_net(method))
    x, y = tiny_batch()
    for got, want in zip(grads(net, x, y), reference_grads(net, x, y, method)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["fa", "dfa"])
def test_conv_dropout_masks_multiply_the_feedback(method):
    rates = dict(dropout_input=0.1, dropout_conv=(0.25, 0.5), dropout_hidden=0.5)
    net = with_other_forward_weights(tiny_net(method, **rates))
    x, y = tiny_batch()
    torch.manual_seed(7)
    got = grads(net, x, y)
    torch.manual_seed(7)          # redraw the same masks: same generator, same order, same shapes
    shapes = [(1, BATCH, math.prod(SHAPE)), (BATCH, 3, 8, 8), (BATCH, 4, 3, 3), (1, BATCH, 5)]
    masks = [(torch.rand(s, dtype=torch.float64) >= p).double() / (1 - p)
             for s, p in zip(shapes, [0.1, 0.25, 0.5, 0.5])]
    masks = [masks[0][0], masks[1], masks[2], masks[3][0]]
    assert (masks[1] == 0).any() and (masks[2] == 0).any()
    for g, w in zip(got, reference_grads(net, x, y, method, masks)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_dfa_differs_from_bp_on_conv_but_top_layer_is_the_same():
    bp = tiny_net("bp", seeds=(5,))
    dfa = tiny_net("dfa")
    dfa.load_state_dict(bp.state_dict(), strict=False)
    x, y = tiny_batch()
    g_bp, g_dfa = grads(bp, x, y), grads(dfa, x, y)
    n_conv, n_fc = 2, 2
    hidden_weights = list(range(n_conv)) + [2 * n_conv + j for j in range(n_fc - 1)]
    for i in hidden_weights:          # no silent BP fallback anywhere below the output
        assert not torch.allclose(g_bp[i], g_dfa[i]), f"weight {i} got BP's gradient"
    out_w, out_b = 2 * n_conv + n_fc - 1, 2 * n_conv + 2 * n_fc - 1
    torch.testing.assert_close(g_bp[out_w], g_dfa[out_w])
    torch.testing.assert_close(g_bp[out_b], g_dfa[out_b])


def test_conv_feedback_is_not_a_constant_map():
    """The DFA signal at a pooled map differs across positions and channels (dense B, not shared)."""
    net = tiny_net("dfa")
    x, y = tiny_batch()
    logits = net(x)
    e = torch.autograd.grad(per_replica_loss(logits, y, "bce").sum(), logits)[0]
    signal = (e @ net.feedback)[0, :, :27].reshape(BATCH, 3, 3, 3)
    assert signal[0, 0].unique().numel() == 9 and not torch.allclose(signal[0, 0], signal[0, 1])


def test_fa_conv_function_uses_b_in_the_transposed_convolution():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 4, 6, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)   # groups=2
    b = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True)
    kernels = torch.randn(6, 2, 3, 3, dtype=torch.float64, generator=g)
    out = Conv2dFA.apply(h, w, b, kernels, 1, 2)
    torch.testing.assert_close(out, F.conv2d(h, w, b, padding=1, groups=2))
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=g)
    out.backward(grad_out)
    want_h = torch.nn.grad.conv2d_input(h.shape, kernels, grad_out, padding=1, groups=2)
    want_w = torch.nn.grad.conv2d_weight(h, w.shape, grad_out, padding=1, groups=2)
    torch.testing.assert_close(h.grad, want_h)
    torch.testing.assert_close(w.grad, want_w)
    torch.testing.assert_close(b.grad, grad_out.sum((0, 2, 3)))


# ---- no wasted work -----------------------------------------------------------------------------
def graph_nodes(tensor) -> list:
    seen, stack, nodes = set(), [tensor.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(n for n, _ in node.next_functions)
    return nodes


def test_dfa_computes_no_input_gradients():
    net = tiny_net("dfa")
    x, y = tiny_batch()
    nodes = graph_nodes(per_replica_loss(net(x), y, "bce").sum())
    convs = [n for n in nodes if "Convolution" in type(n).__name__]
    linears = [n for n in nodes if "Baddbmm" in type(n).__name__]
    assert len(convs) == 2 and len(linears) == 2
    # next_functions = (input, weight, bias) / (bias, input, weight): no edge to the input at all.
    assert all(n.next_functions[0][0] is None for n in convs)
    assert all(n.next_functions[1][0] is None for n in linears)
    # …while BP needs the second conv's input gradient (the contrast that makes the check meaningful).
    bp_nodes = graph_nodes(per_replica_loss(tiny_net("bp")(x), y, "bce").sum())
    bp_convs = [n for n in bp_nodes if "Convolution" in type(n).__name__]
    assert sum(n.next_functions[0][0] is not None for n in bp_convs) == 1   # not the first one


def test_fa_first_conv_skips_its_input_gradient(monkeypatch):
    asked = []
    original = torch.ops.aten.convolution_backward

    class Spy:
        def __call__(self, *args):
            asked.append(list(args[-1]))
            return original(*args)
    monkeypatch.setattr(torch.ops.aten, "convolution_backward", Spy())
    net = tiny_net("fa")
    x, y = tiny_batch()
    grads(net, x, y)
    assert sorted(asked) == [[False, True, True], [True, True, True]]


# ---- stacked replicas ---------------------------------------------------------------------------
@pytest.mark.parametrize("stack", ["loop", "grouped"])
@pytest.mark.parametrize("method", ["bp", "fa", "dfa"])
def test_stacked_conv_replicas_equal_separate_networks(method, stack):
    stacked = tiny_net(method, seeds=(0, 1, 2), stack=stack)
    x, y = tiny_batch(replicas=3)
    stacked_grads = [grads(stacked, x, y, replica=r) for r in range(3)]
    for r, seed in enumerate((0, 1, 2)):
        single = tiny_net(method, seeds=(seed,))
        for name, buf in single.named_buffers():
            torch.testing.assert_close(buf[0], getattr(stacked, name)[r])
        for got, want in zip(stacked_grads[r], grads(single, x[r:r + 1], y[r:r + 1])):
            torch.testing.assert_close(got, want)
    stacked.eval()
    with torch.no_grad():                          # shared evaluation input (batch, D)
        out = stacked(x[0])
        torch.testing.assert_close(out[1], tiny_net(method, seeds=(1,)).eval()(x[0])[0])


def test_grouped_stacking_is_one_grouped_convolution_per_layer():
    net = tiny_net("dfa", seeds=(0, 1, 2), stack="grouped")
    x, y = tiny_batch(replicas=3)
    convs = [n for n in graph_nodes(per_replica_loss(net(x), y, "bce").sum())
             if "Convolution" in type(n).__name__]
    assert len(convs) == 2
    loop = tiny_net("dfa", seeds=(0, 1, 2), stack="loop")
    convs = [n for n in graph_nodes(per_replica_loss(loop(x), y, "bce").sum())
             if "Convolution" in type(n).__name__]
    assert len(convs) == 6


def test_keep_replicas_and_chunked_evaluation():
    net = tiny_net("dfa", seeds=(0, 1, 2))
    x, _ = tiny_batch()
    net.eval()
    with torch.no_grad():
        full = net(x[0].repeat(5, 1))
        net.eval_chunk = 6                          # two examples per replica per chunk
        torch.testing.assert_close(net(x[0].repeat(5, 1)), full)
    net.keep_replicas(torch.tensor([0, 2]))
    assert net.replicas == 2 and net.feedback.shape[0] == 2 and net.conv_weights[0].shape[0] == 2
    torch.testing.assert_close(net.feedback[1], tiny_net("dfa", seeds=(2,)).feedback[0])


# ---- config ---------------------------------------------------------------------------------------
def test_paper_lr_and_preprocess_are_the_conv_rows_defaults():
    def lr_pre(*ov):
        cfg = compose_config(*ov)
        validate(cfg)
        return cfg.optim.lr, cfg.data.preprocess
    assert lr_pre("model=conv", "data=cifar10") == (5e-5, "zca")
    assert lr_pre("model=conv", "data=cifar100") == (2.5e-5, "zca")
    assert lr_pre("model=conv", "data=mnist") == (1e-4, "none")
    assert lr_pre("model=fc1000x3", "data=cifar10") == (1e-4, "none")
    assert lr_pre("model=fc1000x3", "data=cifar100") == (1e-4, "none")
    assert lr_pre("model=conv", "data=cifar10", "optim.lr=3e-4", "data.preprocess=none") == (3e-4, "none")
    assert lr_pre("model=fc800x2", "data.preprocess=zca") == (1e-4, "zca")
    assert lr_pre("model=conv", "data=cifar10", "optim=sgd")[0] == 1e-2   # the paper's lr is RMSprop's


@pytest.mark.parametrize("row, data, lr", [("table2/conv_tanh", "cifar10", 5e-5),
                                           ("table3/conv_tanh", "cifar100", 2.5e-5)])
def test_experiment_row_files(row, data, lr):
    for method in ("bp", "fa", "dfa"):
        cfg = compose_config(f"experiment={row}", f"method={method}")
        validate(cfg)
        assert (cfg.model.name, cfg.data.name, cfg.optim.lr, cfg.data.preprocess) == ("conv", data, lr, "zca")
        assert (cfg.loss.name, cfg.dropout.name, cfg.optim.name) == ("bce", "none", "rmsprop")


def test_paper_dropout_on_the_conv_net():
    net = build_model(compose_config("model=conv", "data=cifar10", "dropout=paper"), (3, 32, 32), 10, [0])
    assert (net.dropout_input, net.dropout_conv, net.dropout_hidden) == (0.1, [0.25, 0.25, 0.5], 0.5)
    net = build_model(compose_config("model=conv", "data=cifar10"), (3, 32, 32), 10, [0])
    assert (net.dropout_input, net.dropout_conv, net.dropout_hidden) == (0.0, [0.0, 0.0, 0.0], 0.0)


@pytest.mark.parametrize("overrides, words", [
    (("model=conv", "method=ifa"), "method=ifa is not defined for model=conv"),
    (("model=conv", "model.channels=[8,8,8,8,8]", "data=cifar10"), "does not fit 3x32x32 inputs"),
    (("model=conv", "dropout=paper", "model.channels=[8,8]"), "dropout.conv must be null or a list"),
    (("model=conv", "model.channels=[]"), "model.channels must be a non-empty list"),
    (("model=conv", "model.kernel=0"), "model.kernel must be a positive integer"),
    (("model=conv", "model.stack=vmap"), "model.stack='vmap' is not supported"),
    (("data.preprocess=pca",), "data.preprocess='pca' is not supported"),
    (("data.zca_eps=0",), "data.zca_eps must be a number in (0"),
])
def test_impossible_conv_settings_are_one_sentence(overrides, words):
    with pytest.raises(UserError) as err:
        validate(compose_config(*overrides))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_ifa_on_conv_is_refused_before_any_data_is_loaded(tmp_path):
    out = run_cli("run", "model=conv", "data=cifar10", "method=ifa", f"data.root={tmp_path / 'none'}",
                  "data.download=false", f"results_dir={tmp_path / 'res'}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "method=ifa is not defined for model=conv" in out.stderr and "not found" not in out.stderr
    assert not list((tmp_path / "res").rglob("summary.json"))


# ---- runs ---------------------------------------------------------------------------------------
def tiny_conv_cfg(root, cache, *overrides):
    return compose_config("model=conv", "data=cifar10", f"data.root={root}", "data.download=false",
                          f"data.cache_dir={cache}", "model.channels=[4,6]", "model.fc=[16]",
                          "trainer.max_epochs=2", "trainer.stop_train_error=0", "optim.lr=1e-3",
                          "trainer.progress=false", *overrides)


def test_conv_run_writes_records_with_the_lr_and_preprocess_used(fake_cifar10, tmp_path):
    cfg = tiny_conv_cfg(fake_cifar10, tmp_path / "cache", "optim.lr=5e-5")
    (summary,) = train(cfg, tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / SUMMARY).read_text())
    assert on_disk["model"] == "conv" and on_disk["lr"] == 5e-5 and on_disk["preprocess"] == "zca"
    assert on_disk["hidden"] == [4, 6, 16] and on_disk["epochs"] == 2 and on_disk["init"] == "zero"
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("method, stack", [("fa", "loop"), ("dfa", "grouped")])
def test_stacked_conv_seeds_equal_separate_runs(fake_cifar10, tmp_path, method, stack):
    cache = tmp_path / "cache"
    stacked = train(tiny_conv_cfg(fake_cifar10, cache, f"method={method}", "seeds=[0,1]", f"model.stack={stack}"),
                    tmp_path / "stack")
    for seed, summary in zip([0, 1], stacked):
        alone = train(tiny_conv_cfg(fake_cifar10, cache, f"method={method}", f"seed={seed}"),
                      tmp_path / f"s{seed}")[0]
        assert summary["seed"] == seed and summary["stacked_seeds"] == 2
        for key in ("train_loss", "test_loss", "train_error", "test_error"):
            assert summary[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-5), key


def test_short_real_cifar10_conv_run_writes_records(real_cifar10, tmp_path):
    out = run_cli("run", "model=conv", "data=cifar10", "method=dfa", "data.subset=256",
                  "data.test_subset=256", "trainer.max_epochs=1", f"data.root={real_cifar10}",
                  "data.download=false", f"results_dir={tmp_path / 'res'}", "trainer.progress=false",
                  env={"DFA_CACHE_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    (path,) = list((tmp_path / "res").rglob(SUMMARY))
    summary = json.loads(path.read_text())
    assert (summary["model"], summary["data"], summary["method"]) == ("conv", "cifar10", "dfa")
    assert (summary["lr"], summary["preprocess"], summary["n_train"], summary["epochs"]) == (5e-5, "zca", 256, 1)
    assert len(list((tmp_path / "cache").glob("zca-cifar10-n256-*.pt"))) == 1
