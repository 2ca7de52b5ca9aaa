"""The CUDA-graph path, checked on the CPU (issue 50): what the engine asks of torch.cuda is recorded
by fakes, so each mechanism is tested here although no GPU runs it. scripts/graph_vs_eager.py
checks the same path on a real GPU, against eager steps."""
from __future__ import annotations

import contextlib
import warnings
import weakref

import pytest
import torch

from dfa_cli.runs import checkpoint as ckpt
from dfa_cli.data.datasets import load_dataset
from dfa_cli.training.engine import Trainer
from dfa_cli.training.fast import FastFCStep
from dfa_cli.nets.fc import FCNet
from dfa_cli.training.optim import FusedRMSprop
from dfa_cli.runs.records import RunRecord
from dfa_cli.run import train
from dfa_cli.training.schedule import LRSchedule
from dfa_cli.runs.signals import Interrupted

from conftest import compose_config, write_fake_mnist
from survive import one_thread, overrides, records, signal_at_step

CUDA1 = torch.device("cuda", 1)


class FakeStream:
    def __init__(self, device=None, priority=0):
        self.device = None if device is None else torch.device(device)

    def wait_stream(self, other):
        pass


class FakeGraph:
    def __init__(self, *args, **kwargs):
        self.replays = 0

    def replay(self):
        self.replays += 1


class FakeCuda:
    """Stands in for the torch.cuda calls of the graph path, and records them: which device was
    current when a stream or a capture was entered, and with which stream."""

    def __init__(self):
        self.current = None   # the device torch.cuda.device(...) made current (None: never entered)
        self.streams, self.captures, self.graphs = [], [], []

    def install(self, monkeypatch):
        fake = self

        @contextlib.contextmanager
        def device(d):
            before, fake.current = fake.current, torch.device(d)
            try:
                yield
            finally:
                fake.current = before

        @contextlib.contextmanager
        def stream(s):
            fake.streams.append((fake.current, s))
            yield

        @contextlib.contextmanager
        def graph(g, pool=None, stream=None, **kwargs):
            fake.captures.append({"current": fake.current, "stream": stream, "kwargs": kwargs,
                                  "lr": fake.lr() if hasattr(fake, "lr") else None})
            yield

        def new_graph(*args, **kwargs):
            fake.graphs.append(FakeGraph())
            return fake.graphs[-1]

        for name, value in {"device": device, "stream": stream, "graph": graph, "CUDAGraph": new_graph,
                            "Stream": FakeStream, "current_stream": lambda device=None: FakeStream(device),
                            "synchronize": lambda device=None: None}.items():
            monkeypatch.setattr(torch.cuda, name, value)
        return self


@pytest.fixture
def data_288(tmp_path):
    """288 examples: four full batches of 64 and a partial batch of 32 after the capture."""
    return write_fake_mnist(tmp_path / "data", n_train=288, n_test=64)


def graph_trainer(root, tmp_path, *, schedule=None, fast=False, max_epochs=3, checkpoint=None):
    """A CPU trainer told to take the CUDA-graph path (torch.cuda faked by the test)."""
    data = load_dataset("mnist", root, download=False)
    model = FCNet([784, 16, 16, 10], "tanh", "dfa", [0], dropout_hidden=0.5)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    trainer = Trainer(model, opt, data, [RunRecord(tmp_path / "rec")], [0], progress=False,
                      max_epochs=max_epochs, stop_train_error=0, schedule=schedule, fast_step=fast,
                      checkpoint=checkpoint)
    trainer.use_graph = True
    return trainer


# ---- 1. the LR schedule reaches the captured step ----------------------------------------------
def test_a_schedule_change_drops_the_captured_step(data_288, tmp_path, monkeypatch):
    """Capturable RMSprop with a float LR bakes the LR into the captured kernels: each LR must
    have its own capture, or the replays go on at the first LR."""
    fake = FakeCuda().install(monkeypatch)
    trainer = graph_trainer(data_288, tmp_path, schedule=LRSchedule("step", 1))
    fake.lr = lambda: trainer.optimizer.param_groups[0]["lr"]
    trainer.fit()
    assert [c["lr"] for c in fake.captures] == [1e-3, 5e-4, 2.5e-4]
    # each epoch: 3 warm-up steps, the capture and its replay (4 full batches)
    assert [g.replays for g in fake.graphs] == [1, 1, 1]


def test_an_unchanged_lr_keeps_the_captured_step(data_288, tmp_path, monkeypatch):
    fake = FakeCuda().install(monkeypatch)
    trainer = graph_trainer(data_288, tmp_path, schedule=LRSchedule("constant"))
    trainer.fit()
    assert len(fake.captures) == 1 and fake.graphs[0].replays == 1 + 4 + 4


# ---- 2. the capture happens on the run's device and a stream of it ------------------------------
def test_the_capture_is_entered_on_the_runs_device_and_stream(data_288, tmp_path, monkeypatch):
    """torch's default capture stream lives on the device current when it was first made; a run on
    cuda:1 must make cuda:1 current and capture on a stream of cuda:1 (its warm-up steps too)."""
    fake = FakeCuda().install(monkeypatch)
    trainer = graph_trainer(data_288, tmp_path)
    trainer.device = CUDA1   # (the tensors stay on the CPU: only torch.cuda's calls are faked)
    order = torch.randperm(288, generator=torch.Generator().manual_seed(0)).unsqueeze(0)
    for s in range(4):
        trainer._step(order[:, s * 64:(s + 1) * 64])
    assert len(fake.captures) == 1
    capture = fake.captures[0]
    assert capture["current"] == CUDA1
    assert isinstance(capture["stream"], FakeStream) and capture["stream"].device == CUDA1
    warmups = [(current, s.device) for current, s in fake.streams]
    assert warmups == [(CUDA1, CUDA1)] * 3


def test_the_device_check_captures_with_torchs_liveness_check(data_288, tmp_path, monkeypatch):
    from dfa_cli.training import graph
    fake = FakeCuda().install(monkeypatch)
    monkeypatch.setattr(graph, "CHECK_INPUT_LIVENESS", True)
    graph_trainer(data_288, tmp_path, max_epochs=1).fit()
    assert [c["kwargs"] for c in fake.captures] == [{"check_input_liveness": True}]


# ---- 3. a checkpoint made by a capturable optimizer resumes on the CPU ------------------------
def _capturable_checkpoint(path):
    """The checkpoint as a GPU run with the CUDA graph writes it: capturable param groups."""
    state = ckpt.load(path)
    for group in state["optimizer"]["param_groups"]:
        group["capturable"] = True
    ckpt.save(path, state)


@pytest.mark.parametrize("fused", ["false", "true"])
def test_a_capturable_checkpoint_resumes_on_the_cpu_bit_for_bit(tmp_path, fused, monkeypatch):
    """torch's RMSprop asserted (capturable=True with CPU parameters); FusedRMSprop keeps its own
    step tensors and must go on from the loaded ones."""
    from dfa_cli.training import optim
    monkeypatch.setattr(optim, "_compiled_update", optim._rmsprop_update)   # its logic, uncompiled: fast
    root = write_fake_mnist(tmp_path / "data")
    cfg = lambda: compose_config(*overrides(root, "trainer.batch_size=32", f"optim.fused={fused}",  # noqa: E731
                                            "device=cpu", epochs=2))
    with one_thread():
        train(cfg(), tmp_path / "ref")
        with monkeypatch.context() as m:
            signal_at_step(m, 8 + 3)   # 8 steps an epoch: stop in epoch 2 after step 3
            with pytest.raises(Interrupted):
                train(cfg(), tmp_path / "run")
        _capturable_checkpoint(tmp_path / "run" / ckpt.CHECKPOINT)
        train(cfg(), tmp_path / "run", resume=True)
    assert records(tmp_path / "run") == records(tmp_path / "ref")


@pytest.mark.parametrize("use_graph", [False, True])
def test_restoring_sets_capturable_and_the_step_tensors_for_this_run(data_288, tmp_path, monkeypatch, use_graph):
    saved = {}
    monkeypatch.setattr(ckpt, "save", lambda path, state: saved.update(state=state))
    first = graph_trainer(data_288, tmp_path / "a", checkpoint=tmp_path / "a.pt")
    first.use_graph = False
    first._train_epoch(1)
    first._save(2, 0, [r.order_gen.get_state() for r in first.active], 0.0, 0.0)
    state = saved["state"]
    for group in state["optimizer"]["param_groups"]:
        group["capturable"] = not use_graph   # saved by a run on the other kind of device
    FakeCuda().install(monkeypatch)
    second = graph_trainer(data_288, tmp_path / "b")
    second.use_graph = use_graph
    second._restore(state)
    assert all(g["capturable"] is use_graph for g in second.optimizer.param_groups)
    for p, s in second.optimizer.state.items():
        # torch's layout: capturable → float32 on the parameter's device; else a CPU scalar
        assert s["step"].device == (p.device if use_graph else torch.device("cpu")) and s["step"].dim() == 0
        if use_graph:
            assert s["step"].dtype == torch.float32
    if not use_graph:   # (a capturable optimizer steps only on a GPU)
        second._train_epoch(2)


# ---- 4. fast_step's buffers outlive the partial batch -----------------------------------------
def test_the_full_batch_buffers_outlive_a_partial_batch():
    """A captured graph writes into the full-batch buffers at every replay; the eager partial batch
    between replays must not free them."""
    net = FCNet([20, 16, 8, 4], "tanh", "dfa", [0, 1])
    step = FastFCStep(net, "bce")
    g = torch.Generator().manual_seed(0)
    full = torch.rand(2, 64, 20, generator=g), torch.randint(0, 4, (2, 64), generator=g)
    part = torch.rand(2, 32, 20, generator=g), torch.randint(0, 4, (2, 32), generator=g)
    step(*full)
    buffers = step._activations(full[0])
    alive = [weakref.ref(b) for b in buffers]
    step(*part)
    assert all(r() is not None for r in alive)
    assert step._activations(full[0]) is buffers   # the same memory, not a new allocation
    step(*full)
    assert step._activations(part[0]) is step._activations(part[0])


def test_buffers_of_a_replica_count_no_longer_trained_are_let_go():
    """After a stacked seed stops the graph is recaptured; buffers for the old count go."""
    net = FCNet([20, 16, 4], "tanh", "dfa", [0, 1])
    step = FastFCStep(net, "bce")
    step(torch.rand(2, 8, 20), torch.randint(0, 4, (2, 8)))
    net.keep_replicas(torch.tensor([1]))
    step(torch.rand(1, 8, 20), torch.randint(0, 4, (1, 8)))
    assert [key[0] for key in step.buffers] == [1]


# ---- 5. only the run device's CUDA generator is saved ------------------------------------------
def _fake_generators(monkeypatch, n_devices=3):
    states = [torch.full((8,), i, dtype=torch.uint8) for i in range(n_devices)]
    restored = []
    index = lambda d: torch.device(d).index or 0 if d is not None else 0  # noqa: E731
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(states))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": states[index(device)])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: restored.append(("all", s)))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device="cuda": restored.append((torch.device(device), s)))
    return states, restored


def test_only_the_run_devices_generator_is_saved_and_restored(data_288, tmp_path, monkeypatch):
    states, restored = _fake_generators(monkeypatch)
    saved = {}
    monkeypatch.setattr(ckpt, "save", lambda path, state: saved.update(state=state))
    trainer = graph_trainer(data_288, tmp_path / "a", checkpoint=tmp_path / "a.pt")
    trainer.use_graph, trainer.device = False, CUDA1
    trainer._save(1, 0, [r.order_gen.get_state() for r in trainer.active], 0.0, 0.0)
    assert torch.is_tensor(saved["state"]["rng_cuda"])
    assert torch.equal(saved["state"]["rng_cuda"], states[1])
    other = graph_trainer(data_288, tmp_path / "b")
    other.use_graph, other.device = False, torch.device("cuda", 0)   # resumed on another GPU
    other._restore(saved["state"])
    assert len(restored) == 1 and restored[0][0] == torch.device("cuda", 0)
    assert torch.equal(restored[0][1], states[1])


@pytest.mark.parametrize("run_device, expected", [(CUDA1, 1), (torch.device("cuda", 5), 0)])
def test_an_old_checkpoint_with_every_generator_restores_one(data_288, tmp_path, monkeypatch, run_device, expected):
    """Checkpoints written before issue 50 hold a list, one state per visible GPU: the run's own
    device's entry is taken when the list has it, else the first (fewer GPUs visible now)."""
    states, restored = _fake_generators(monkeypatch)
    saved = {}
    monkeypatch.setattr(ckpt, "save", lambda path, state: saved.update(state=state))
    trainer = graph_trainer(data_288, tmp_path / "a", checkpoint=tmp_path / "a.pt")
    trainer.use_graph = False
    trainer._save(1, 0, [r.order_gen.get_state() for r in trainer.active], 0.0, 0.0)
    state = {**saved["state"], "rng_cuda": list(states)}
    other = graph_trainer(data_288, tmp_path / "b")
    other.use_graph, other.device = False, run_device
    other._restore(state)
    assert len(restored) == 1 and restored[0][0] == run_device
    assert torch.equal(restored[0][1], states[expected])


# ---- the optimizer: torch's capturable notice, FusedRMSprop's tensors --------------------------
def test_torchs_capturable_notice_is_filtered(monkeypatch):
    """Warm-up steps and the partial batch run the capturable optimizer outside the graph on
    purpose; torch's once-per-run advice to drop capturable=True does not apply to this run.
    (dfa_cli.training.optim installs the filter on import; pytest resets filters around each test, so the
    test installs it again inside its own catch_warnings.)"""
    from dfa_cli.training.optim import quiet_capturable_notice

    class NotCapturing:
        def is_capturing(self):
            return False
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: torch.device("cuda"))
    monkeypatch.setattr(torch.accelerator, "current_stream", lambda device=None: NotCapturing())
    opt = torch.optim.RMSprop([torch.nn.Parameter(torch.zeros(2))], lr=1e-3, capturable=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_capturable_notice()
        opt._accelerator_graph_capture_health_check()
        warnings.warn("another warning still shows", UserWarning)
    assert [str(w.message) for w in caught] == ["another warning still shows"]


def test_fused_rmsprop_keeps_its_lr_and_steps_on_the_parameters_device():
    params = [torch.nn.Parameter(torch.zeros(3, 4, device="meta")), torch.nn.Parameter(torch.zeros(4, device="meta"))]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt = FusedRMSprop(params, lr=1e-3, alpha=0.99, eps=1e-8)
    opt._flatten(params)
    assert opt._lr.device.type == "meta"
    assert all(opt.state[p]["step"].device.type == "meta" for p in params)
