"""Alignment diagnostics: the angle math, BP's own angle, DFA and FA angles against a hand computation,
the probe's per-epoch means, "free when off", identical training with the probe on, eval_train, and a
short real DFA run whose angles fall below 90°."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from dfa_cli.config import validate
from dfa_cli.data.datasets import load_dataset
from dfa_cli.training.diagnostics import (AlignmentProbe, _gradients, alignment_angles, angle_degrees, signal_reach,
                                 to_json)
from dfa_cli.training.engine import Trainer
from dfa_cli.runs.errors import UserError
from dfa_cli.training.losses import per_replica_loss
from dfa_cli.nets.fc import FCNet
from dfa_cli.runs.records import METRICS, SUMMARY, RunRecord
from dfa_cli.run import train

from conftest import compose_config, count_host_reads, load_script


SIZES = [6, 5, 4, 3]


def make_net(method: str, seeds=(0, 1), dtype=torch.float64, **kw) -> FCNet:
    net = FCNet(SIZES, "tanh", method, list(seeds), init="uniform", **kw).to(dtype)
    with torch.no_grad():   # forward weights away from their initial values (FA's B ≠ W)
        g = torch.Generator().manual_seed(7)
        for w in net.weights:
            w.copy_(torch.randn(w.shape, generator=g, dtype=torch.float64).to(dtype))
    return net


def make_batch(replicas=2, size=7, seed=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(replicas, size, SIZES[0], generator=g, dtype=torch.float64).to(dtype),
            torch.randint(0, SIZES[-1], (replicas, size), generator=g))


def arccos_degrees(u, v) -> torch.Tensor:
    """The textbook formula, for reference: degrees(arccos(<u,v>/(|u||v|)))."""
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


# ---- the angle ------------------------------------------------------------------------------
def test_angle_of_hand_made_vectors():
    u = torch.tensor([[1., 0, 0], [1, 2, 3], [1, 2, 3], [0, 0, 0], [1, 1, 0], [1, 0, 0], [2, 0, 0]],
                     dtype=torch.float64)
    v = torch.tensor([[0., 1, 0], [2, 4, 6], [-1, -2, -3], [1, 2, 3], [1, 0, 0], [0.5, math.sqrt(3) / 2, 0],
                      [0, 0, 0]], dtype=torch.float64)
    got = angle_degrees(u, v)
    #                 orthogonal  parallel  antiparallel  zero       45°   60°   zero
    expected = torch.tensor([90, 0, 180, math.nan, 45, 60, math.nan], dtype=torch.float64)
    assert torch.allclose(got, expected, atol=1e-12, equal_nan=True)
    assert to_json(got.tolist()) == pytest.approx([90, 0, 180, None, 45, 60, None])   # zero → null, not NaN
    assert json.dumps(to_json(got.tolist()))  # strict JSON


def test_angle_is_exact_where_arccos_is_not_and_survives_tiny_vectors():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(50, 240, generator=g), torch.randn(50, 240, generator=g)
    assert torch.allclose(angle_degrees(u.double(), v.double()), arccos_degrees(u.double(), v.double()), atol=1e-9)
    assert (angle_degrees(u, u) == 0).all()                      # exactly: BP's own angle
    assert angle_degrees(u, 3 * u).max() < 1e-4 < arccos_degrees(u, 3 * u).max()   # arccos: ~1e-2° in fp32
    assert torch.allclose(angle_degrees(u, -u), torch.full((50,), 180.0))
    tiny = u * 1e-30                             # a vanishing gradient (deep tanh, BP): squares underflow
    assert torch.allclose(angle_degrees(tiny, v), angle_degrees(u, v), atol=1e-3)
    assert torch.isnan(angle_degrees(torch.full((3,), math.inf), torch.ones(3)))   # diverged: undefined


# ---- one measurement ------------------------------------------------------------------------
def test_bp_s_own_angles_are_zero_with_dropout():
    """Rule and BP passes see the same batch and the same dropout masks, so for BP they coincide.

    Exactly 0 in float64 (identical gradients give 2·atan2(0, 2) = 0); the float32 bound 1e-3° only
    guards against a non-deterministic kernel and is far below any angle of interest.
    """
    for dtype, bound in ((torch.float64, 1e-9), (torch.float32, 1e-3)):
        net = make_net("bp", dropout_input=0.1, dropout_hidden=0.5, dtype=dtype)
        x, y = make_batch(dtype=dtype)
        values, keys = alignment_angles(net, x, y)
        assert keys == ("delta_angle", "weight_angle") and values.shape == (2, 2, 2)
        assert values.abs().max().item() <= bound
    # The check has teeth: two passes with different dropout masks are not aligned.
    (d1, _), (d2, _) = _gradients(net, x, y, "bce"), _gradients(net, x, y, "bce")
    assert angle_degrees(d1[0], d2[0]).nanmean() > 1


def test_dfa_angles_against_a_hand_computation():
    net, (x, y) = make_net("dfa"), make_batch()
    W = [w.detach() for w in net.weights]
    b = [v.detach() for v in net.biases]
    h = [x]
    for i in range(2):
        h.append(torch.tanh(h[-1] @ W[i] + b[i]))
    e = (torch.sigmoid(h[-1] @ W[2] + b[2]) - F.one_hot(y, 3).double()) / x.shape[1]
    B = net.feedback.split(SIZES[1:3], dim=2)                    # [B_1 | B_2], (R, n_out, n_i)
    dfa = [(e @ B[i]) * (1 - h[i + 1] ** 2) for i in range(2)]
    bp = [None, (e @ W[2].transpose(1, 2)) * (1 - h[2] ** 2)]
    bp[0] = (bp[1] @ W[1].transpose(1, 2)) * (1 - h[1] ** 2)
    values, _ = alignment_angles(net, x, y)
    for i in range(2):
        delta = arccos_degrees(dfa[i], bp[i]).mean(-1)           # per example, then over the batch
        weight = arccos_degrees((h[i].transpose(1, 2) @ dfa[i]).flatten(1),
                                (h[i].transpose(1, 2) @ bp[i]).flatten(1))
        assert torch.allclose(values[:, 0, i], delta, atol=1e-7)
        assert torch.allclose(values[:, 1, i], weight, atol=1e-7)
    assert ((values > 5) & (values < 175)).all()                 # a random B: far from BP here


def test_fa_feedback_angle_is_w_against_its_b():
    fresh = FCNet(SIZES, "tanh", "fa", [0, 1], init="uniform").double()   # B = a copy of the initial W
    values, keys = alignment_angles(fresh, *make_batch())
    assert keys[-1] == "fa_feedback_angle" and values.shape == (2, 3, 2)
    assert (values[:, 2] == 0).all() and (values[:, :2].abs() < 1e-9).all()   # FA = BP at the start
    moved, (x, y) = make_net("fa"), make_batch()
    values, _ = alignment_angles(moved, x, y)
    for i in range(2):   # hidden layer i+1 receives its error through W_{i+2} under BP, B_{i+2} under FA
        expected = arccos_degrees(moved.weights[i + 1].detach().flatten(1), moved.fa_feedback1.flatten(1)
                                  if i == 0 else moved.fa_feedback2.flatten(1))
        assert torch.allclose(values[:, 2, i], expected, atol=1e-7)


def test_the_measurement_leaves_grads_rng_and_the_rule_alone():
    net, (x, y) = make_net("dfa", dropout_hidden=0.5), make_batch()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    alignment_angles(net, x, y)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in net.parameters()) and net.method == "dfa"


# ---- the probe ------------------------------------------------------------------------------
def test_the_probe_averages_its_measurements_per_epoch_and_reports_undefined_as_null():
    net = make_net("dfa")
    probe = AlignmentProbe(every=2)
    batches = [make_batch(seed=s) for s in range(5)]

    class Data:  # what the probe reads from the trainer's data set
        x_train = torch.cat([b[0] for b in batches], 1)[0]
        y_train = torch.cat([b[1] for b in batches], 1)[0]
    for s in range(5):   # steps 0, 2, 4 are measured
        probe.on_step(net, Data, torch.arange(7 * s, 7 * s + 7).expand(2, 7))
    (first, second) = probe.collect(2)
    measured = torch.stack([alignment_angles(net, Data.x_train[torch.arange(7 * s, 7 * s + 7).expand(2, 7)],
                                             Data.y_train[torch.arange(7 * s, 7 * s + 7).expand(2, 7)])[0]
                            for s in (0, 2, 4)]).mean(0)
    assert first["measurements"] == 3 and set(first) == {"delta_angle", "weight_angle", "measurements"}
    assert first["delta_angle"] == pytest.approx(measured[0, 0].tolist())
    assert second["weight_angle"] == pytest.approx(measured[1, 1].tolist())
    assert probe.collect(2) == [None, None]                      # reset: nothing measured since
    zero = FCNet(SIZES, "tanh", "dfa", [0], init="paper")        # BP's hidden gradients are all zero
    probe.measure(zero, *make_batch(replicas=1, dtype=torch.float32))
    (row,) = probe.collect(1)
    assert row["delta_angle"] == [None, None] and row["weight_angle"] == [None, None]


def make_trainer(fake_mnist, tmp_path, alignment=None, seeds=(0, 1), dropout=0.5, **kw):
    data = load_dataset("mnist", fake_mnist, download=False)
    model = FCNet([784, 32, 32, 10], "tanh", "dfa", list(seeds), dropout_hidden=dropout)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    records = [RunRecord(tmp_path / str(s)) for s in seeds]
    return Trainer(model, opt, data, records, list(seeds), progress=False, max_epochs=2,
                   stop_train_error=0, alignment=alignment, **kw)



@pytest.mark.parametrize("on", [False, True])
def test_no_host_sync_in_the_epoch_and_no_extra_forward_when_off(fake_mnist, tmp_path, monkeypatch, on):
    trainer = make_trainer(fake_mnist, tmp_path, AlignmentProbe(every=1) if on else None)
    forward = trainer.model.forward
    calls = []
    monkeypatch.setattr(trainer.model, "forward", lambda *a, **kw: calls.append(1) or forward(*a, **kw))
    reads = count_host_reads(monkeypatch)
    trainer._train_epoch(1)     # 256 examples, batch 64: four steps
    assert reads == ["cpu"], reads
    assert len(calls) == (4 * 3 if on else 4)   # on: the rule's and BP's pass before each step


def without(rows, *keys):
    return [{k: v for k, v in r.items() if k not in keys} for r in rows]


def metrics(directory):
    return [json.loads(line) for line in (directory / METRICS).read_text().splitlines()]


@pytest.mark.parametrize("extra", [[], ["adversarial.eps=0.08"]])
def test_the_probe_does_not_change_the_training(fake_mnist, tmp_path, extra):
    base = [f"data.root={fake_mnist}", "data.download=false", "model.width=32", "trainer.max_epochs=2",
            "trainer.stop_train_error=0", "optim.lr=1e-3", "dropout=paper", "seeds=[0,1]",
            "trainer.progress=false", "init=uniform", *extra]
    off = train(compose_config(*base), tmp_path / "off")
    on = train(compose_config(*base, "diagnostics.alignment=true", "diagnostics.every=1"), tmp_path / "on")
    timing = ("wall_seconds", "seconds_per_epoch", "finished_at", "alignment_every")
    assert without(off, *timing) == without(on, *timing)
    for seed in (0, 1):
        a, b = metrics(tmp_path / "off" / f"seed{seed}"), metrics(tmp_path / "on" / f"seed{seed}")
        assert without(a, "seconds", "elapsed") == without(b, "seconds", "elapsed", "alignment")
        assert all(len(r["alignment"]["delta_angle"]) == 2 and r["alignment"]["measurements"] == 4 for r in b)
    assert on[0]["alignment_every"] == 1 and off[0]["alignment_every"] is None


# ---- trainer.eval_train -----------------------------------------------------------------------
def test_eval_train_records_a_clean_pass_beside_the_online_error(fake_mnist, tmp_path):
    trainer = make_trainer(fake_mnist, tmp_path / "on", seeds=(0,), eval_train=True)
    (summary,) = trainer.fit()
    rows = metrics(tmp_path / "on" / "0")
    assert all({"train_error", "train_error_eval", "train_loss_eval"} <= set(r) for r in rows)
    with torch.no_grad():                                        # the final network, dropout off
        logits = trainer.model.eval()(trainer.data.x_train)[0]
    y = trainer.data.y_train
    assert rows[-1]["train_error_eval"] == pytest.approx(100 * (logits.argmax(-1) != y).double().mean().item())
    assert rows[-1]["train_loss_eval"] == pytest.approx(
        per_replica_loss(logits[None], y[None], "bce").item(), rel=1e-5)
    assert (summary["train_error_eval"], summary["train_loss_eval"]) == \
        (rows[-1]["train_error_eval"], rows[-1]["train_loss_eval"])
    assert rows[-1]["train_error_eval"] != rows[-1]["train_error"]   # dropout on vs off, and online
    make_trainer(fake_mnist, tmp_path / "off", seeds=(0,)).fit()
    assert not any("train_error_eval" in r for r in metrics(tmp_path / "off" / "0"))
    assert "train_error_eval" not in json.loads((tmp_path / "off" / "0" / SUMMARY).read_text())


# ---- config ---------------------------------------------------------------------------------
def test_everything_is_off_by_default():
    cfg = compose_config()
    assert (cfg.adversarial.eps, cfg.diagnostics.alignment, cfg.diagnostics.features, cfg.trainer.eval_train) == \
        (0.0, False, False, False)
    assert cfg.diagnostics.every == 100


@pytest.mark.parametrize("overrides, words", [
    (["diagnostics.every=0"], "diagnostics.every must be a positive integer"),
    (["diagnostics.alignment=yes please"], "diagnostics.alignment must be true or false"),
    (["trainer.eval_train=2"], "trainer.eval_train must be true or false"),
    (["diagnostics.feature_examples=0"], "diagnostics.feature_examples must be a positive integer"),
    (["diagnostics.alignment=true", "model=conv"], "diagnostics.alignment=true is implemented for the fully"),
    (["diagnostics.features=true", "model=conv"], "diagnostics.features=true is implemented for the fully"),
])
def test_bad_diagnostics_settings_are_one_sentence(overrides, words):
    with pytest.raises(UserError) as err:
        validate(compose_config(*overrides))
    assert words in str(err.value) and "\n" not in str(err.value)


# ---- how far the input and the error reach ---------------------------------------------------
def test_signal_reach_against_a_hand_computation():
    """One hidden layer, float64: the trace is the std over the batch of h, and BP's δa is
    ``(e W2ᵀ) ⊙ (1 − h²)`` with ``e = (sigmoid(z) − onehot) / B`` (BCE summed over classes, batch mean)."""
    net = FCNet([6, 5, 3], "tanh", "bp", [0, 1], init="uniform").double()
    x, y = make_batch()
    got = signal_reach(net, x, y)
    for r in range(2):
        h = torch.tanh(x[r] @ net.weights[0][r] + net.biases[0][r])
        z = h @ net.weights[1][r] + net.biases[1][r]
        e = (torch.sigmoid(z) - F.one_hot(y[r], 3).double()) / x.shape[1]
        delta = (e @ net.weights[1][r].T) * (1 - h * h)
        torch.testing.assert_close(got["input_trace"][r, 0], h.std(0).mean().detach())
        torch.testing.assert_close(got["error_norm"][r, 0], delta.norm().detach())


def test_in_a_deep_tanh_net_bp_and_fa_lose_the_signal_and_dfa_does_not():
    """What the 100x240 row rests on, on an 80x16 net: BP's error signal and the image fade
    geometrically with depth (the signal still measured, not flushed to 0 by a float32 norm); FA
    (paper init) starts its upper layers at zero, so no image gets above layer 1; DFA delivers the
    output error to every layer at about the same size."""
    depth = 80
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 20, generator=g), torch.randint(0, 10, (64,), generator=g)
    reach = {m: {k: v[0] for k, v in signal_reach(FCNet([20, *[16] * depth, 10], "tanh", m, [0]), x, y).items()}
             for m in ("bp", "fa", "dfa")}
    bp, fa, dfa = reach["bp"], reach["fa"], reach["dfa"]
    assert 0 < bp["error_norm"][0] < 1e-6 * bp["error_norm"][-1]
    assert bp["input_trace"][-1] < 1e-3 * bp["input_trace"][0]
    assert fa["error_norm"][0] < 1e-6 * fa["error_norm"][-1]
    assert fa["input_trace"][0] > 0 and torch.all(fa["input_trace"][1:] == 0)
    assert torch.all(dfa["error_norm"] > 0) and dfa["error_norm"].max() < 3 * dfa["error_norm"].min()
    with pytest.raises(ValueError, match="training mode"):
        signal_reach(FCNet([20, 16, 10], "tanh", "dfa", [0]).eval(), x, y)


def test_the_deep_signal_script_prints_a_table_and_refuses_bad_layers(fake_mnist, capsys):
    deep_signal = load_script("deep_signal")
    args = ["--root", str(fake_mnist), "--depth", "6", "--width", "8", "--images", "32", "--methods", "bp,dfa"]
    assert deep_signal.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("6x8 tanh, seed 0") and "32 MNIST training images" in lines[0]
    assert lines[1].split() == ["layer", "bp", "trace", "bp", "|δa|", "dfa", "trace", "dfa", "|δa|"]
    assert [int(row.split()[0]) for row in lines[2:]] == [1, 2, 5, 6]
    assert deep_signal.main([*args, "--layers", "0,7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --layers must lie between 1 and --depth (6).") and err.count("\n") == 1


# ---- real data ------------------------------------------------------------------------------
def test_dfa_comes_into_alignment_on_real_mnist_and_bp_is_at_zero(real_data, tmp_path):
    """A short real run: the angle between DFA's δa_i and BP's starts near 90° and falls well below.

    lr 1e-3 instead of the paper's 1e-4: with 2000 examples and 4 epochs (124 steps) at 1e-4 the
    network barely leaves its zero start and the alignment has not appeared yet; at 1e-3 the same
    steps show the whole story (measured: epoch 1 ≈ 85°/79°, epoch 4 ≈ 50°/47° for the two layers).
    """
    common = [f"data.root={real_data}", "data.download=false", "data.subset=2000", "data.test_subset=500",
              "model.width=100", "model.depth=2", "optim.lr=1e-3", "trainer.stop_train_error=0",
              "diagnostics.alignment=true", "diagnostics.every=5", "trainer.progress=false"]
    train(compose_config(*common, "method=dfa", "trainer.max_epochs=4"), tmp_path / "dfa")
    rows = metrics(tmp_path / "dfa")
    first, last = rows[0]["alignment"]["delta_angle"], rows[-1]["alignment"]["delta_angle"]
    assert all(70 < a < 110 for a in first), first
    assert all(a < 65 for a in last) and all(f - a > 20 for f, a in zip(first, last)), (first, last)
    assert rows[-1]["test_error"] < 30
    train(compose_config(*common, "method=bp", "trainer.max_epochs=1"), tmp_path / "bp")
    (row,) = metrics(tmp_path / "bp")
    assert row["alignment"]["delta_angle"] == [0.0, 0.0] and row["alignment"]["weight_angle"] == [0.0, 0.0]
