"""``dfa-run model=custom``: a model one writes trains with the built-in protocol, records, resume
and report, and one the API cannot train is refused in one sentence before any data is loaded."""
from __future__ import annotations

import json

import pytest
import torch

from dfa_cli.config import validate
from dfa_cli.runs.errors import UserError
from dfa_cli.report.build import Options, build_report
from dfa_cli.report.collect import collect
from dfa_cli.run import train

from conftest import compose_config, run_cli
from survive import one_thread, records, signal_at_step

RESMLP = ("model=custom", "+model.kwargs.width=16", "+model.kwargs.blocks=1")


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def tiny(data, *extra):
    return compose_config(*RESMLP, "trainer.max_epochs=2", "trainer.batch_size=32", "trainer.progress=false",
                          "trainer.stop_train_error=0", "optim.lr=1e-3", f"data.root={data}",
                          "data.download=false", *extra)


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_the_custom_model_composes_names_its_runs_and_validates():
    cfg = compose_config(*RESMLP)
    assert (cfg.model.kind, cfg.model.name, cfg.model.target) == ("custom", "ResMLP-width16-blocks1",
                                                                 "dfa_cli.examples.nets:ResMLP")
    validate(cfg)
    validate(compose_config("model=custom", "model.target=dfa_cli.examples.nets:LeNet", "method=fa"))


def test_bp_fa_and_dfa_train_a_custom_model_with_the_usual_records(fake_mnist, tmp_path):
    results = {}
    for method in ("bp", "fa", "dfa"):
        train(tiny(fake_mnist, f"method={method}"), tmp_path / method)
        s = summary(tmp_path / method)
        assert (s["model"], s["method"], s["epochs"], s["init"]) == \
            ("dfa_cli.examples.nets:ResMLP(width=16, blocks=1)", method, 2, "own")
        assert s["hidden"] == [16, 16] and s["model_kwargs"] == {"width": 16, "blocks": 1}
        assert len((tmp_path / method / "metrics.jsonl").read_text().splitlines()) == 2
        results[method] = s["train_loss"]
    assert len(set(results.values())) == 3          # three rules, three different trainings


def test_a_custom_run_stopped_mid_epoch_resumes_bit_for_bit(fake_mnist, tmp_path, monkeypatch):
    from dfa_cli.runs.signals import Interrupted
    train(tiny(fake_mnist), tmp_path / "ref")
    signal_at_step(monkeypatch, 8 + 3)              # 8 steps an epoch: stop in epoch 2
    with pytest.raises(Interrupted):
        train(tiny(fake_mnist), tmp_path / "run")
    train(tiny(fake_mnist), tmp_path / "run", resume=True)
    assert records(tmp_path / "run") == records(tmp_path / "ref")


def test_fgsm_takes_true_bp_through_a_custom_fa_model_and_hands_fa_back(fake_mnist, tmp_path, monkeypatch):
    from dfa_cli.feedback import custom
    rules_set = []
    original = custom.set_rule

    def spy(module, rule):
        rules_set.append(rule)
        return original(module, rule)
    monkeypatch.setattr(custom, "set_rule", spy)
    train(tiny(fake_mnist, "method=fa", "adversarial.eps=0.08", "trainer.max_epochs=1"), tmp_path)
    steps = 256 // 32
    assert rules_set[-2 * steps:] == ["bp", "fa"] * steps     # each step: the true gradient, then FA
    assert summary(tmp_path)["adversarial_eps"] == 0.08


def test_dfa_report_lists_custom_runs_by_their_target(fake_mnist, tmp_path):
    for method in ("bp", "dfa"):
        train(tiny(fake_mnist, f"method={method}", "trainer.max_epochs=1"), tmp_path / method)
    report = build_report(collect([tmp_path]), Options())
    (other,) = [v for v in report.views if v.key == "other_runs"]
    (row,) = other.rows
    assert row[1] == "dfa_cli.examples.nets:ResMLP(width=16, blocks=1)"
    assert [group for group, _ in other.groups[1:]] == ["BP", "DFA"]
    assert "n=1" in row[3] and "n=1" in row[4]


@pytest.mark.parametrize("overrides, words", [
    (("model.target=no_such_pkg.nets:Net",), "no module named 'no_such_pkg'"),
    (("model.target=dfa_cli.examples.nets:NoSuchNet",), "has no attribute 'NoSuchNet'"),
    (("model.target=justaname",), "must name a class or function as module:attr"),
    (("+model.kwargs.depth=3",), "model.kwargs do not fit model.target=dfa_cli.examples.nets:ResMLP"),
    (("model.target=custom_nets:NoPoints",), "method=dfa: rule dfa needs feedback points"),
    (("model.target=custom_nets:plain_sequential",), "method=dfa: rule dfa needs feedback points, and the model "
     "is a plain nn.Sequential: build it with feedback.sequential(*layers) in place of nn.Sequential(*layers)"),
    (("model.target=custom_nets:sequential_of_one_layer",), "needs feedback points, and the model has no feedback"),
    (("model.target=custom_nets:WrongOutput",),
     "returns (3, 5) for a 3x1x28x28 batch of mnist; dfa-run needs logits of shape (batch, 10)"),
    (("model.target=custom_nets:TimeFirst",), "points and output must put the batch first"),
    (("model.target=custom_nets:WithLayerNorm", "method=fa"), "norm (LayerNorm) has weights of its own"),
    (("model.target=custom_nets:Detached", "method=bp"), "l0.weight, l0.bias would get no gradient"),
    (("model.target=custom_nets:not_a_module",), "returned a str, not a torch.nn.Module"),
    (("+model.kwargs.activation=sigmoid",), "building model.target=dfa_cli.examples.nets:ResMLP(activation="
                                            "sigmoid) failed (ValueError: activation must be one of"),
    (("model.target=custom_nets:MLP", "data=cifar10"), "fails on a 3x3x32x32 batch of cifar10 (RuntimeError"),
    (("method=ifa",), "method=ifa cannot train model=custom: IFA carries the error forward"),
    (("method=usf",), "sign-symmetric rules are defined here for the built-in fully connected nets only"),
    (("seeds=[0,1]",), "model=custom trains one seed per run"),
    (("dropout=paper",), "a model of your own has its own dropout layers"),
    (("init=zero",), "starts from its own initialisation"),
    (("diagnostics.alignment=true",), "fully connected models only"),
], ids=lambda v: v[0] if isinstance(v, tuple) else None)
def test_what_the_api_cannot_train_is_one_sentence_before_any_data(tmp_path, overrides, words):
    cfg = compose_config("model=custom", f"data.root={tmp_path / 'no-data-here'}", "data.download=false",
                         *overrides)
    with pytest.raises(UserError) as err:
        train(cfg, tmp_path / "run")
    assert words in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_a_plain_sequential_is_told_the_one_line_fix_and_the_fix_trains(tmp_path):
    from dfa_cli import feedback
    from dfa_cli.feedback.custom import build
    from custom_nets import plain_sequential
    proc = run_cli("run", "model=custom", "model.target=custom_nets:plain_sequential", "method=dfa",
                   f"results_dir={tmp_path}", f"data.root={tmp_path / 'none'}", "data.download=false",
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("dfa-run: model.target=custom_nets:plain_sequential cannot be trained with "
                                  "method=dfa: rule dfa needs feedback points, and the model is a plain "
                                  "nn.Sequential: build it with feedback.sequential(*layers) in place of "
                                  "nn.Sequential(*layers)")
    assert not any(tmp_path.rglob("summary.json"))
    with pytest.raises(feedback.FeedbackError, match=r"feedback\.sequential\(\*layers\) in place of"):
        feedback.set_rule(plain_sequential(), "shallow")   # the API says the same
    build(compose_config("model=custom", "model.target=custom_nets:plain_sequential", "method=bp"), seed=0)
    net = feedback.set_rule(feedback.sequential(*plain_sequential()), "dfa")   # the fix, as the sentence says it
    net(torch.rand(4, 1, 28, 28)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_a_bad_model_kwarg_on_the_command_line_is_one_sentence(tmp_path):
    proc = run_cli("run", *RESMLP, "+model.kwargs.colour=blue", f"results_dir={tmp_path}",
                   f"data.root={tmp_path / 'none'}", "data.download=false", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("dfa-run: model.kwargs do not fit") and proc.stderr.count("\n") == 1
    assert not any(tmp_path.rglob("summary.json"))


def test_the_probe_step_leaves_the_model_as_built(fake_mnist):
    """The check runs one forward and backward; the buffers and gradients are as before it."""
    from dfa_cli.feedback.custom import build
    cfg = compose_config("model=custom", "model.target=dfa_cli.examples.nets:LeNet")
    net = build(cfg, seed=0)
    assert all(p.grad is None for p in net.parameters())
    assert net.module[-1].feedback.shape == (10, 6 * 14 * 14 + 16 * 5 * 5 + 120 + 84)
    again = build(cfg, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


@pytest.mark.slow   # (compiling the fused RMSprop twice takes ~10 s)
def test_bench_times_a_custom_model_by_dfa_and_by_bp(tmp_path):
    from argparse import Namespace
    from conftest import load_script
    bench = load_script("bench")
    data = bench.bench_data("mnist", 128, None, torch.device("cpu"))
    args = Namespace(custom="dfa_cli.examples.nets:ResMLP", custom_kwargs='{"width": 8, "blocks": 1}', repeats=1,
                     data="mnist")
    rows = bench.measure_custom(args, data, torch.device("cpu"), tmp_path)
    name = "dfa_cli.examples.nets:ResMLP(width=8, blocks=1)"
    assert [(r["model"], r["method"]) for r in rows] == [(name, "dfa"), (name, "bp")]
    assert all(r["s_per_epoch"] > 0 for r in rows) and rows[1]["vs_bp"] == 1.0
