"""The fast paths of the engine (issue: engine speed): no host syncs in the step, CUDA graphs
equal to eager steps, and the benchmark script runs. Speed itself is measured by scripts/bench.py,
never asserted here."""
from __future__ import annotations

import json

import pytest
import torch

from dfa_cli.data.datasets import load_dataset
from dfa_cli.training.engine import Trainer
from dfa_cli.runs.errors import UserError
from dfa_cli.nets.fc import FCNet
from dfa_cli.runs.records import RunRecord
from dfa_cli.run import train

from conftest import compose_config, count_host_reads, load_script

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_trainer(fake_mnist, tmp_path, device="cpu", graph=False, seeds=(0, 1), dropout=0.5):
    data = load_dataset("mnist", fake_mnist, download=False).to(device)
    model = FCNet([784, 32, 32, 10], "tanh", "dfa", list(seeds), dropout_hidden=dropout).to(device)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, capturable=graph)
    records = [RunRecord(tmp_path / str(s)) for s in seeds]
    return Trainer(model, opt, data, records, list(seeds), cuda_graph=graph, progress=False,
                   max_epochs=3, stop_train_error=0)


def test_a_training_epoch_reads_the_device_once(fake_mnist, tmp_path, monkeypatch):
    trainer = make_trainer(fake_mnist, tmp_path)
    reads = count_host_reads(monkeypatch)
    trainer._train_epoch(1)    # 256 examples, batch 64: four steps
    assert reads == ["cpu"], reads


def test_cuda_graph_on_without_cuda_is_one_sentence(fake_mnist, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = compose_config(f"data.root={fake_mnist}", "trainer.cuda_graph=on", "device=cpu")
    with pytest.raises(UserError, match="cuda_graph=on needs a CUDA device"):
        train(cfg, tmp_path)


def assert_same_runs(a: list[dict], b: list[dict], rel: float = 1e-5) -> None:
    """Equal up to float rounding; the test error may differ by one borderline example of 128."""
    for sa, sb in zip(a, b, strict=True):
        assert (sa["seed"], sa["epochs"]) == (sb["seed"], sb["epochs"])
        assert sa["train_loss"] == pytest.approx(sb["train_loss"], rel=rel)
        assert sa["test_error"] == pytest.approx(sb["test_error"], abs=100 / 128 + 1e-9)


@needs_cuda
def test_cuda_graph_steps_equal_eager_steps(fake_mnist, tmp_path):
    eager = make_trainer(fake_mnist, tmp_path / "eager", "cuda", graph=False, dropout=0.0)
    graph = make_trainer(fake_mnist, tmp_path / "graph", "cuda", graph=True, dropout=0.0)
    a, b = eager.fit(), graph.fit()
    assert graph.graph is not None     # 4 steps an epoch: 3 warm-up steps, then replays
    assert_same_runs(a, b)


@needs_cuda
def test_cuda_training_equals_cpu_training(fake_mnist, tmp_path):
    """Initialisation, feedback and data order come from CPU generators: the same run on both."""
    cpu = make_trainer(fake_mnist, tmp_path / "cpu", "cpu", dropout=0.0).fit()
    gpu = make_trainer(fake_mnist, tmp_path / "gpu", "cuda", graph=True, dropout=0.0).fit()
    assert_same_runs(cpu, gpu, rel=1e-4)


@needs_cuda
def test_graph_replays_survive_a_stacked_seed_stopping(fake_mnist, tmp_path, monkeypatch):
    original = Trainer._stop_reason

    def seed1_stops_after_epoch1(self, rep, row):
        return "converged" if rep.seed == 1 and row["epoch"] == 1 else original(self, rep, row)
    monkeypatch.setattr(Trainer, "_stop_reason", seed1_stops_after_epoch1)
    stacked = make_trainer(fake_mnist, tmp_path / "stack", "cuda", graph=True, seeds=(0, 1, 2), dropout=0.0).fit()
    monkeypatch.setattr(Trainer, "_stop_reason", original)
    alone = [make_trainer(fake_mnist, tmp_path / f"s{s}", "cuda", graph=True, seeds=(s,), dropout=0.0).fit()[0]
             for s in (0, 2)]
    assert [s["epochs"] for s in stacked] == [3, 1, 3]
    assert_same_runs([stacked[0], stacked[2]], alone)


def test_benchmark_script_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    load_script("bench").main(["--device", "cpu", "--models", "fc240x7", "--methods", "dfa", "--train-size", "256",
                               "--repeats", "1", "--stack", "2", "--usual", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    variants = {(r["method"], r["variant"]) for r in rows}
    assert {("dfa", "GEMM floor"), ("dfa", "dfa-cli"), ("bp", "usual PyTorch loop")} <= variants
    assert all(r["s_per_epoch"] > 0 and (r["vs_floor"] or 1) > 0 for r in rows)
    assert next(r for r in rows if r["variant"] == "GEMM floor")["vs_floor"] == 1.0
    assert "× floor" in capsys.readouterr().out


def test_benchmark_times_table_2s_nets_on_cifar10s_shape(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench = load_script("bench")
    assert bench.inputs(bench.bench_data("cifar10", 8, None, torch.device("cpu"))) == 3 * 32 * 32
    bench.main(["--device", "cpu", "--data", "cifar10", "--models", "fc1000x1", "--methods", "dfa",
                "--train-size", "128", "--repeats", "1", "--data-root", str(tmp_path), "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["variant"]) for r in rows] == [("fc1000x1", "GEMM floor"), ("fc1000x1", "dfa-cli")]
    assert "50,000-example training pass" in capsys.readouterr().out   # (random data of CIFAR-10's shape here)
