"""Seconds per training epoch against the GEMM floor: what dfa-cli's step costs beyond its matrix products.

    python scripts/bench.py --device cpu --threads 1               # fc800x1..fc240x100, DFA and BP
    python scripts/bench.py --device cpu --models fc800x2 --throughput   # + sweep throughput, 1 vs 2 jobs
    python scripts/bench.py --json bench.json                      # also write the numbers
    python scripts/bench.py --device cpu --threads 1 --custom dfa_cli.examples.nets:ResMLP   # your model
    python scripts/bench.py --device cpu --threads 1 --data cifar10   # Table 2's nets, fc1000x1 and fc1000x3

Every row trains batch 64 on the same data (``--data``, MNIST or CIFAR-10, from
``--data-root``/``$DFA_DATA_DIR``, the first ``--train-size`` examples, else random data of its shape),
in this process, at ``--threads``, and is reported as seconds per training pass of the whole set
(MNIST 60,000 examples, CIFAR-10 50,000; no evaluation), the device synchronised at both ends. Rows:

- **GEMM floor**: only the step's matrix products, back to back, at the same shapes: forward
  ``h W`` per layer, weight gradients ``hᵀδ``, and for DFA the one ``e B`` (BP: the input gradients
  ``δ Wᵀ`` of every layer but the first). Nothing a real step could skip; the yardstick.
- **dfa-cli**: the engine as ``dfa-run`` runs it on this device (on the CPU: the hand-written step
  of dfa_cli/training/fast.py and the fused RMSprop of dfa_cli/training/optim.py), the paper's RMSprop.
- **usual PyTorch loop** (``--usual``): nn.Sequential + DataLoader + RMSprop, BP.
- **stacked** (``--stack N``): N seeds trained at once, per model.
- **feedback API** (``--custom module:Model``, with ``--custom-kwargs '{"width": 256}'``): a model of
  your own (docs/custom-models.md) as ``dfa-run model=custom`` trains it, by DFA and by BP (plain
  autograd through the same model), the engine's autograd step and the same RMSprop for both; the
  built-in nets are not measured then. Its ratio column is DFA's time over BP's.

Floor and dfa-cli are timed alternately ``--repeats`` times and the fastest of each is kept, so a
shared machine's drift hits both alike. ``--throughput`` also runs whole epochs as dfa-run does
(test pass included) in one job of 2 threads and in two jobs of 1 thread side by side, and reports
model-epochs per hour for each.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omegaconf import OmegaConf  # noqa: E402

from dfa_cli.feedback import custom  # noqa: E402
from dfa_cli.data.datasets import INPUT_SHAPES, LAYOUTS, Dataset, load_dataset  # noqa: E402
from dfa_cli.training.engine import Trainer  # noqa: E402
from dfa_cli.training.fast import supported  # noqa: E402
from dfa_cli.nets.fc import FCNet  # noqa: E402
from dfa_cli.training.optim import FusedRMSprop  # noqa: E402
from dfa_cli.runs.records import RunRecord, machine_name  # noqa: E402

MODELS = {"fc800x1": [800], "fc800x2": [800] * 2, "fc800x3": [800] * 3, "fc240x7": [240] * 7,
          "fc240x100": [240] * 100, "fc1000x1": [1000], "fc1000x3": [1000] * 3}
BATCH = 64


class DataSet(NamedTuple):
    epoch: int           # training examples in one pass of the whole set
    models: str          # the nets its table trains (the default --models)


DATA_SETS = {"mnist": DataSet(60000, "fc800x1,fc800x2,fc800x3,fc240x7,fc240x100"),
             "cifar10": DataSet(50000, "fc1000x1,fc1000x3")}


def bench_data(name: str, n: int, root, device) -> Dataset:
    """The first ``n`` examples of ``name`` when ``root`` holds it, else random data of its shape."""
    if root and (Path(root) / LAYOUTS[name][0]).is_dir():
        return load_dataset(name, root, download=False, subset=n, test_subset=10000).to(device)
    shape = INPUT_SHAPES[name]
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, math.prod(shape), generator=g), torch.randint(0, 10, (n,), generator=g)
    return Dataset("random", x, y, x[:1000], y[:1000], shape, 10, "").to(device)


def inputs(data: Dataset) -> int:
    return math.prod(data.input_shape)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_floor(sizes: list[int], method: str, steps: int, device) -> float:
    """Seconds for ``steps`` steps' matrix products alone (see the module's docstring)."""
    g = torch.Generator().manual_seed(0)
    w = [(torch.rand(a, b, generator=g) - 0.5).to(device) for a, b in zip(sizes, sizes[1:])]
    grads = [torch.empty_like(m) for m in w]
    acts = [torch.rand(BATCH, n, generator=g).to(device) for n in sizes]
    outs = [torch.empty(BATCH, n, device=device) for n in sizes[1:]]
    ins = [torch.empty(BATCH, n, device=device) for n in sizes[:-1]]
    feedback = torch.rand(sizes[-1], sum(sizes[1:-1]), generator=g).to(device)
    signal = torch.empty(BATCH, feedback.shape[1], device=device)

    def step():
        for i, m in enumerate(w):
            torch.mm(acts[i], m, out=outs[i])
        if method == "dfa":
            torch.mm(outs[-1], feedback, out=signal)
        else:
            for i in range(1, len(w)):
                torch.mm(outs[i], w[i].t(), out=ins[i])
        for i, m in enumerate(w):
            torch.mm(acts[i].t(), outs[i], out=grads[i])
    for _ in range(min(20, steps)):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - start


def make_trainer(method: str, hidden, data: Dataset, device, seeds, tmp: Path) -> Trainer:
    """dfa-cli's engine set up as dfa-run sets it up on ``device`` (fast step and fused RMSprop on the CPU)."""
    model = FCNet([inputs(data), *hidden, 10], "tanh", method, seeds, init="uniform").to(device)
    cpu = device.type == "cpu"
    opt = (FusedRMSprop(model.parameters(), lr=1e-4, alpha=0.99, eps=1e-8) if cpu else
           torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.99, eps=1e-8, capturable=True))
    records = [RunRecord(tmp / f"{method}-{len(seeds)}-{s}-{time.time_ns()}") for s in seeds]
    return Trainer(model, opt, data, records, list(seeds), cuda_graph=not cpu, progress=False,
                   fast_step=cpu and supported(model))


def custom_trainer(method: str, target: str, kwargs: dict, data: Dataset, data_name: str, device,
                   tmp: Path) -> Trainer:
    """A model of your own as dfa-run builds it (seed 0, the data set's shape), with the same RMSprop as above."""
    cfg = OmegaConf.create({"model": {"target": target, "kwargs": kwargs}, "method": {"name": method},
                            "data": {"name": data_name}})
    model = custom.build(cfg, seed=0).to(device)
    cpu = device.type == "cpu"
    opt = (FusedRMSprop(model.parameters(), lr=1e-4, alpha=0.99, eps=1e-8) if cpu else
           torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.99, eps=1e-8))
    record = RunRecord(tmp / f"custom-{method}-{time.time_ns()}")
    return Trainer(model, opt, data, [record], [0], progress=False)


def measure_custom(args, data: Dataset, device, tmp: Path) -> list[dict]:
    """DFA through the feedback API against BP on the same model of your own, timed alternately."""
    kwargs = json.loads(args.custom_kwargs)
    label = custom.label(OmegaConf.create({"target": args.custom, "kwargs": kwargs}))
    trainers = {m: custom_trainer(m, args.custom, kwargs, data, args.data, device, tmp) for m in ("dfa", "bp")}
    for trainer in trainers.values():
        trainer._train_epoch(0)                            # warm-up: compiles the fused optimizer
    best = {m: float("inf") for m in trainers}
    for _ in range(args.repeats):                          # alternate, keep the fastest of each
        for m, trainer in trainers.items():
            best[m] = min(best[m], timed_pass(trainer, device))
    scale = DATA_SETS[args.data].epoch / len(data.x_train)
    return [{"model": label, "method": m, "variant": "feedback API (model=custom)",
             "s_per_epoch": scale * best[m], "vs_bp": best[m] / best["bp"]} for m in trainers]


def timed_pass(trainer: Trainer, device) -> float:
    sync(device)
    start = time.perf_counter()
    trainer._train_epoch(1)
    sync(device)
    return time.perf_counter() - start


def usual_loop(hidden, data: Dataset, device) -> float:
    """The baseline: nn.Sequential + DataLoader + RMSprop, back-propagation; one timed pass."""
    layers, n_in = [], inputs(data)
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.Tanh()]
        n_in = width
    model = nn.Sequential(*layers, nn.Linear(n_in, 10)).to(device)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.99, eps=1e-8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train.cpu(), data.y_train.cpu()),
                                         batch_size=BATCH, shuffle=True)
    loss_fn = nn.BCEWithLogitsLoss()

    def one_pass():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), nn.functional.one_hot(y, 10).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    one_pass()
    sync(device)
    start = time.perf_counter()
    one_pass()
    sync(device)
    return time.perf_counter() - start


def measure(args, data: Dataset, device, tmp: Path) -> list[dict]:
    scale, steps = DATA_SETS[args.data].epoch / len(data.x_train), len(data.x_train) // BATCH
    rows = []
    for model_name in args.models.split(","):
        hidden = MODELS[model_name]
        for method in args.methods.split(","):
            trainer = make_trainer(method, hidden, data, device, [0], tmp)
            trainer._train_epoch(0)                       # warm-up: compiles the fused optimizer
            floor = ours = float("inf")
            for _ in range(args.repeats):                  # alternate, keep the fastest of each
                floor = min(floor, gemm_floor([inputs(data), *hidden, 10], method, steps, device))
                ours = min(ours, timed_pass(trainer, device))
            rows += [{"model": model_name, "method": method, "variant": "GEMM floor", "s_per_epoch": scale * floor},
                     {"model": model_name, "method": method, "variant": "dfa-cli", "s_per_epoch": scale * ours}]
            if args.stack > 1:
                stacked = make_trainer(method, hidden, data, device, list(range(args.stack)), tmp)
                stacked._train_epoch(0)
                t = min(timed_pass(stacked, device) for _ in range(args.repeats))
                rows.append({"model": model_name, "method": method, "variant": f"dfa-cli, {args.stack} stacked (per model)",
                             "s_per_epoch": scale * t / args.stack})
            print(f"  done {model_name} {method}", file=sys.stderr, flush=True)
        if args.usual:
            rows.append({"model": model_name, "method": "bp", "variant": "usual PyTorch loop",
                         "s_per_epoch": scale * usual_loop(hidden, data, device)})
    for r in rows:   # (the usual loop is BP: without a BP floor row it has no ratio)
        floor = [f["s_per_epoch"] for f in rows if f["model"] == r["model"]
                 and f["method"] == r["method"] and f["variant"] == "GEMM floor"]
        r["vs_floor"] = r["s_per_epoch"] / floor[0] if floor else None
    return rows


def throughput(args) -> list[dict]:
    """Model-epochs per hour on this machine: one job of 2 threads vs two 1-thread jobs at once."""
    results = []
    for model_name in args.models.split(","):
        for jobs, threads in ((1, 2), (2, 1)):
            cmd = [sys.executable, __file__, "--worker", "--models", model_name, "--methods", "dfa",
                   "--threads", str(threads), "--train-size", str(args.train_size), "--device", "cpu",
                   "--data", args.data]
            start = time.perf_counter()
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(jobs)]
            seconds = [float(p.communicate()[0].split()[-1]) for p in procs]
            wall = time.perf_counter() - start
            per_epoch = max(seconds)                      # a job's whole epoch, test pass included
            results.append({"model": model_name, "method": "dfa", "jobs": jobs, "threads_per_job": threads,
                            "s_per_epoch_per_job": per_epoch, "model_epochs_per_hour": jobs * 3600 / per_epoch,
                            "wall_seconds": wall})
    return results


def worker(args) -> None:
    """One whole epoch as dfa-run trains it (training pass and test pass), scaled to the whole set."""
    device = torch.device("cpu")
    data = bench_data(args.data, args.train_size, args.data_root, device)
    trainer = make_trainer("dfa", MODELS[args.models], data, device, [0], Path(tempfile.mkdtemp(prefix="dfa-bench-")))
    trainer._train_epoch(0)
    start = time.perf_counter()
    trainer._train_epoch(1)
    train_pass = (time.perf_counter() - start) * DATA_SETS[args.data].epoch / len(data.x_train)
    start = time.perf_counter()
    trainer.evaluate(data.x_test, data.y_test)
    print(train_pass + time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", choices=DATA_SETS, default="mnist", help="the data set (default mnist)")
    p.add_argument("--models", default=None, help="comma-separated (default: the data set's table's nets)")
    p.add_argument("--methods", default="dfa,bp")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--stack", type=int, default=0, help="also N stacked seeds (0/1: skip)")
    p.add_argument("--usual", action="store_true", help="also the usual PyTorch loop (BP)")
    p.add_argument("--train-size", type=int, default=6400, help="examples per timed pass")
    p.add_argument("--repeats", type=int, default=3, help="alternating timings of floor and dfa-cli")
    p.add_argument("--throughput", action="store_true", help="also model-epochs/hour, 1 job x 2 threads vs 2 x 1")
    p.add_argument("--data-root", default=os.environ.get("DFA_DATA_DIR"),
                   help="the data in torchvision's layout (default $DFA_DATA_DIR); random data without it")
    p.add_argument("--custom", default=None, metavar="MODULE:MODEL",
                   help="time a model of your own, DFA (feedback API) against BP, instead of the built-in nets")
    p.add_argument("--custom-kwargs", default="{}", help="its keyword arguments, as JSON")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = args.models or DATA_SETS[args.data].models
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return worker(args)
    device = torch.device(args.device)
    data = bench_data(args.data, args.train_size, args.data_root, device)
    with tempfile.TemporaryDirectory(prefix="dfa-bench-") as tmp:   # the trainers' throwaway records
        measure_rows = measure_custom if args.custom else measure
        rows = measure_rows(args, data, device, Path(tmp))
    info = {"device": str(device), "device_name": machine_name(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "data": data.name, "train_size": args.train_size,
            "repeats": args.repeats, "rows": rows}
    print(f"{info['device_name']} ({device}), {info['threads']} thread(s), torch {torch.__version__}, "
          f"{data.name} data, RMSprop, batch {BATCH}; seconds per {DATA_SETS[args.data].epoch:,}-example training pass")
    key, name = ("vs_bp", "× BP") if args.custom else ("vs_floor", "× floor")
    w = max(10, *(len(r["model"]) for r in rows))
    print(f"{'model':{w}} {'method':6} {'variant':36} {'s/epoch':>9} {name:>8}")
    for r in rows:
        ratio = "—" if r[key] is None else f"{r[key]:.2f}"
        print(f"{r['model']:{w}} {r['method']:6} {r['variant']:36} {r['s_per_epoch']:9.3f} {ratio:>8}")
    if args.throughput and device.type == "cpu":
        info["throughput"] = throughput(args)
        print("\nsweep throughput (whole epochs with the test pass, DFA):")
        for t in info["throughput"]:
            print(f"{t['model']:10} {t['jobs']} job(s) x {t['threads_per_job']} thread(s): "
                  f"{t['s_per_epoch_per_job']:.2f} s/epoch per job, {t['model_epochs_per_hour']:.0f} model-epochs/hour")
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
