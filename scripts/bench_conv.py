"""The conv net's ("CONV tanh") training step against its own floor: what dfa-cli adds beyond the
convolutions and matrix products a step cannot skip.

    python scripts/bench_conv.py --threads 1                     # DFA, BP, FA on CIFAR-10's shapes
    python scripts/bench_conv.py --methods dfa --steps 20 --json conv.json

Every row is seconds per 50,000-example training pass (batch 64), scaled from ``--steps`` steps, in
this process, at ``--threads``:

- **floor**: the step's convolutions and matrix products alone, back to back, at the same shapes and
  memory layout as the engine's: every layer's forward and weight gradient; DFA's one ``e B``; BP and
  FA the input gradients of every layer but the first (whose input needs none). No activation,
  pooling, dropout, loss or optimizer.
- **dfa-cli**: the engine as ``dfa-run model=conv data=cifar10`` trains (ConvNet, its rule, the fused
  RMSprop), on random inputs of CIFAR-10's shape (the speed does not depend on the pixels).
- **test pass**: one evaluation of 10,000 examples, which every epoch adds.

Floor and engine are timed alternately ``--repeats`` times and the fastest of each is kept, so a
shared machine's drift hits both alike.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dfa_cli.nets.conv import ConvNet  # noqa: E402
from dfa_cli.data.datasets import Dataset  # noqa: E402
from dfa_cli.training.engine import Trainer  # noqa: E402
from dfa_cli.training.optim import FusedRMSprop  # noqa: E402
from dfa_cli.runs.records import RunRecord, machine_name  # noqa: E402

EPOCH, BATCH, SHAPE, N_OUT = 50_000, 64, (3, 32, 32), 10


def floor_step(net: ConvNet, method: str):
    """A function running one step's convolutions and matrix products at ``net``'s shapes."""
    g = torch.Generator().manual_seed(0)
    cl = torch.channels_last
    pad = net.padding
    c_in = [SHAPE[0], *net.channels[:-1]]
    sides = [SHAPE[1]] + [s[1] for s in net.map_shapes[:-1]]          # each conv's input side
    convs = []
    for ci, co, side in zip(c_in, net.channels, sides):
        x = torch.rand(BATCH, ci, side, side, generator=g).contiguous(memory_format=cl)
        w = torch.rand(co, ci, net.kernel, net.kernel, generator=g) - 0.5
        y = F.conv2d(x, w, padding=pad)
        convs.append((x, w, torch.rand(y.shape, generator=g).contiguous(memory_format=cl)))
    sizes = net.sizes
    fcs = [(torch.rand(BATCH, a, generator=g), torch.rand(a, b, generator=g), torch.rand(BATCH, b, generator=g))
           for a, b in zip(sizes, sizes[1:])]
    feedback = torch.rand(N_OUT, sum(net.hidden_widths), generator=g)

    def step():
        for i, (x, w, dy) in enumerate(convs):
            F.conv2d(x, w, padding=pad)
            mask = [method != "dfa" and i > 0, True, False]
            torch.ops.aten.convolution_backward(dy, x, w, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask)
        for i, (h, w, d) in enumerate(fcs):
            h @ w
            d.t() @ h
            if method != "dfa":
                d @ w.t()
        if method == "dfa":
            fcs[-1][2] @ feedback
    return step


def timed(fn, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - start


def engine(method: str, steps: int, tmp: Path):
    """The engine's training pass over ``steps`` batches, and its test pass."""
    g = torch.Generator().manual_seed(0)
    n = steps * BATCH
    x, y = torch.rand(n, math.prod(SHAPE), generator=g), torch.randint(0, N_OUT, (n,), generator=g)
    xt, yt = torch.rand(10_000, math.prod(SHAPE), generator=g), torch.randint(0, N_OUT, (10_000,), generator=g)
    data = Dataset("random", x, y, xt, yt, SHAPE, N_OUT, "")
    net = ConvNet(SHAPE, N_OUT, method, [0], init="uniform")
    opt = FusedRMSprop(net.parameters(), lr=5e-5, alpha=0.99, eps=1e-8)
    trainer = Trainer(net, opt, data, [RunRecord(tmp / f"{method}-{time.time_ns()}")], [0], progress=False)
    return net, (lambda: trainer._train_epoch(1)), (lambda: trainer.evaluate(xt, yt))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="dfa,bp,fa")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--steps", type=int, default=12, help="steps per timed pass")
    p.add_argument("--repeats", type=int, default=3, help="alternating timings of floor and engine")
    p.add_argument("--no-test-pass", action="store_true", help="skip timing the 10k-example test pass")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = EPOCH / (args.steps * BATCH)
    tmp = Path(tempfile.mkdtemp(prefix="dfa-bench-conv-"))
    rows = []
    for method in args.methods.split(","):
        net, train_pass, test_pass = engine(method, args.steps, tmp)
        floor = floor_step(net, method)
        train_pass()                                    # warm-up: oneDNN primitives, the fused RMSprop
        floor()
        best_floor = best_engine = float("inf")
        for _ in range(args.repeats):
            best_floor = min(best_floor, timed(floor, args.steps))
            best_engine = min(best_engine, timed(train_pass, 1))
        row = {"method": method, "floor_s_per_epoch": scale * best_floor,
               "dfa_cli_s_per_epoch": scale * best_engine, "vs_floor": best_engine / best_floor}
        if not args.no_test_pass:
            test_pass()
            row["test_pass_s"] = min(timed(test_pass, 1) for _ in range(2))
        rows.append(row)
        print(f"  done {method}", file=sys.stderr, flush=True)
    info = {"device_name": machine_name(torch.device("cpu")), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "steps": args.steps, "repeats": args.repeats, "rows": rows}
    print(f"{info['device_name']}, {info['threads']} thread(s), torch {torch.__version__}; CONV tanh on "
          f"CIFAR-10's shapes, batch {BATCH}; seconds per 50k-example training pass")
    print(f"{'method':6} {'floor':>9} {'dfa-cli':>9} {'× floor':>8} {'test pass (10k)':>16}")
    for r in rows:
        test = f"{r['test_pass_s']:.1f}" if "test_pass_s" in r else "—"
        print(f"{r['method']:6} {r['floor_s_per_epoch']:9.1f} {r['dfa_cli_s_per_epoch']:9.1f} {r['vs_floor']:8.2f} {test:>16}")
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
