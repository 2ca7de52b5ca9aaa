"""How far the image and the error get through a deep net at initialisation, under each rule.

    python scripts/deep_signal.py                               # the paper's 100x240 tanh, BP FA DFA
    python scripts/deep_signal.py --depth 7 --methods bp,dfa,ifa --layers 1,4,7

For the chosen hidden layers it prints, on the first ``--images`` MNIST training images, with the
paper's initialisation (``init=paper``: FA and DFA start their tanh layers at zero as the author's
code does) and the paper's loss (BCE):

- input trace: the std over the images of the layer's output, averaged over its units — what is
  left of the image there (0: every image looks the same to the layers above);
- |δa|: the norm of the error signal the rule delivers to the layer (0: none arrives).

This is why the campaign runs the 100x240 row's BP and FA cells, which the paper leaves blank, for
a bounded number of epochs only (docs/reproduction.md, "Why the 100x240 row's BP and FA cells are
bounded"). Reads the data from ``--root``, else ``$DFA_DATA_DIR``, as dfa-run does.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dfa_cli.data.datasets import load_dataset  # noqa: E402
from dfa_cli.training.diagnostics import signal_reach  # noqa: E402
from dfa_cli.runs.errors import UserError  # noqa: E402
from dfa_cli.nets.fc import FCNet  # noqa: E402


def reach_table(methods, depth: int, width: int, activation: str, seed: int, layers, x, y) -> list[str]:
    """One line per layer: the input trace and |δa| under each method."""
    columns = {}
    for method in methods:
        net = FCNet([x.shape[1], *[width] * depth, 10], activation, method, [seed])
        columns[method] = {k: v[0].tolist() for k, v in signal_reach(net, x, y).items()}
    head = "layer " + "".join(f"{m + ' trace':>14}{m + ' |δa|':>14}" for m in methods)
    lines = [head]
    for i in layers:
        cells = "".join(f"{columns[m]['input_trace'][i - 1]:14.2e}{columns[m]['error_norm'][i - 1]:14.2e}"
                        for m in methods)
        lines.append(f"{i:>5} {cells}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--width", type=int, default=240)
    ap.add_argument("--activation", default="tanh", choices=("tanh", "logistic", "relu"))
    ap.add_argument("--methods", default="bp,fa,dfa")
    ap.add_argument("--layers", default=None, help="comma-separated hidden layers, 1 = lowest (default: a spread)")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default=None)
    args = ap.parse_args(argv)
    if args.layers:
        layers = [int(i) for i in args.layers.split(",")]
    else:
        layers = sorted({1, 2, 5, 10, 20, 50, args.depth - 1, args.depth} & set(range(1, args.depth + 1)))
    try:
        if any(not 1 <= i <= args.depth for i in layers):
            raise UserError(f"--layers must lie between 1 and --depth ({args.depth}).")
        data = load_dataset("mnist", args.root, subset=args.images, test_subset=1)
        methods = args.methods.split(",")
        print(f"{args.depth}x{args.width} {args.activation}, seed {args.seed}, init=paper, BCE, "
              f"{len(data.x_train)} MNIST training images")
        print("\n".join(reach_table(methods, args.depth, args.width, args.activation, args.seed, layers,
                                    data.x_train, data.y_train)))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
