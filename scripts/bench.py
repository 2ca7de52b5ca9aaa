"""Seconds per training epoch: the usual PyTorch loop vs dfa-cli, single run and stacked seeds.

    python scripts/bench.py                       # fc800x3 and fc240x7, bp and dfa, on this machine's best device
    python scripts/bench.py --device cpu --train-size 6400 --json bench.json
    python scripts/bench.py --optim sgd           # the optimizer of DESIGN §6's anchors

Every variant trains the same data in this process on the same device: MNIST from
``--data-root`` / ``$DFA_DATA_DIR`` when it is there (the first ``--train-size`` examples), else
random data of MNIST's shape; 784 inputs, 10 classes, batch 64, the paper's RMSprop unless
``--optim sgd``. The clock covers training passes only (no evaluation), after
warm-up, with the device synchronised at the ends; it runs ``--epochs`` passes over
``--train-size`` examples and reports seconds per 60,000-example epoch. Stacked rows report
seconds per model-epoch (the epoch time divided by the number of seeds).

The baseline is the loop most PyTorch code uses: nn.Sequential of nn.Linear/nn.Tanh, a
DataLoader over a TensorDataset with shuffling, ``loss.backward()`` and ``optimizer.step()`` —
back-propagation only, since that loop has no other rule.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dfa_cli.data import Dataset, load_dataset  # noqa: E402
from dfa_cli.engine import Trainer  # noqa: E402
from dfa_cli.models import FCNet  # noqa: E402
from dfa_cli.records import RunRecord, device_name  # noqa: E402

MODELS = {"fc800x3": [800] * 3, "fc240x7": [240] * 7}
EPOCH = 60000


def bench_data(n: int, root, device) -> Dataset:
    """The first ``n`` MNIST examples when ``root`` holds MNIST, else random data of its shape."""
    if root and (Path(root) / "MNIST" / "raw").is_dir():
        return load_dataset("mnist", root, download=False, subset=n, test_subset=1000).to(device)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)
    return Dataset("random", x, y, x[:1000], y[:1000], (1, 28, 28), 10, "").to(device)


def make_optimizer(name: str, params, capturable: bool = False) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-2)
    return torch.optim.RMSprop(params, lr=1e-4, alpha=0.99, eps=1e-8, capturable=capturable)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def usual_loop(hidden, data: Dataset, epochs: int, device, optim: str) -> float:
    """The baseline: nn.Sequential + DataLoader + the optimizer, back-propagation."""
    layers, n_in = [], 784
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.Tanh()]
        n_in = width
    model = nn.Sequential(*layers, nn.Linear(n_in, 10)).to(device)
    opt = make_optimizer(optim, model.parameters())
    dataset = torch.utils.data.TensorDataset(data.x_train.cpu(), data.y_train.cpu())
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True)
    loss_fn = nn.BCEWithLogitsLoss()

    def one_epoch():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), nn.functional.one_hot(y, 10).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    one_epoch()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        one_epoch()
    sync(device)
    return (time.perf_counter() - start) / epochs


def dfa_cli_loop(method: str, hidden, data: Dataset, epochs: int, device, seeds, graph: bool,
                 tmp: Path, optim: str) -> float:
    """dfa-cli's engine: the same model and optimizer, R stacked seeds, CUDA graph where asked."""
    model = FCNet([784, *hidden, 10], "tanh", method, seeds, init="uniform").to(device)
    opt = make_optimizer(optim, model.parameters(), capturable=graph)
    records = [RunRecord(tmp / f"{method}-{len(seeds)}-{s}") for s in seeds]
    trainer = Trainer(model, opt, data, records, list(seeds), cuda_graph=graph, progress=False)
    trainer._train_epoch(0)  # warm-up (and graph capture)
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        trainer._train_epoch(1)
    sync(device)
    return (time.perf_counter() - start) / epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default="fc800x3,fc240x7")
    p.add_argument("--methods", default="dfa,bp")
    p.add_argument("--stack", type=int, default=16, help="seeds in the stacked variant (0: skip)")
    p.add_argument("--train-size", type=int, default=EPOCH, help="examples per timed pass")
    p.add_argument("--epochs", type=int, default=3, help="timed passes after one warm-up pass")
    p.add_argument("--optim", choices=("rmsprop", "sgd"), default="rmsprop",
                   help="rmsprop: the paper's (lr 1e-4); sgd: plain SGD, as DESIGN §6's anchors")
    p.add_argument("--data-root", default=os.environ.get("DFA_DATA_DIR"),
                   help="MNIST in torchvision's layout (default $DFA_DATA_DIR); random data without it")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    device = torch.device(args.device)
    graph = device.type == "cuda"
    data = bench_data(args.train_size, args.data_root, device)
    scale = EPOCH / args.train_size
    tmp = Path(tempfile.mkdtemp(prefix="dfa-bench-"))   # the engine wants record folders
    rows = []
    for model_name in args.models.split(","):
        hidden = MODELS[model_name]
        rows.append({"model": model_name, "method": "bp", "variant": "usual PyTorch loop",
                     "s_per_epoch": scale * usual_loop(hidden, data, args.epochs, device, args.optim)})
        # Single runs first, stacked runs last: a big stacked run leaves the allocator in a state
        # that slowed a later single run by ~30% on the CPU.
        variants = [(m, 1) for m in args.methods.split(",")]
        variants += [(m, args.stack) for m in args.methods.split(",") if args.stack]
        for method, n in variants:
            t = dfa_cli_loop(method, hidden, data, args.epochs, device, list(range(n)), graph, tmp, args.optim)
            label = "dfa-cli single run" if n == 1 else f"dfa-cli {n} stacked seeds (per model)"
            rows.append({"model": model_name, "method": method, "variant": label, "s_per_epoch": scale * t / n})
            print(f"  done {model_name} {method} {label}", file=sys.stderr)
    name = device_name(device)
    info = {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "data": data.name, "optim": args.optim,
            "train_size": args.train_size, "epochs": args.epochs,
            "cuda_graph": graph, "rows": rows}
    print(f"{name} ({device}), torch {torch.__version__}, {data.name} data, {args.optim}, batch 64, "
          f"seconds per 60k-example epoch")
    print(f"{'model':9} {'method':6} {'variant':42} {'s/epoch':>9} {'vs usual':>9}")
    for r in rows:
        base = next(b["s_per_epoch"] for b in rows if b["model"] == r["model"] and b["variant"].startswith("usual"))
        print(f"{r['model']:9} {r['method']:6} {r['variant']:42} {r['s_per_epoch']:9.4f} "
              f"{base / r['s_per_epoch']:8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
