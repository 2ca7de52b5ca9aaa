"""Device check: the CUDA-graph step against eager steps, on the runs that can tell them apart.

    python scripts/graph_vs_eager.py [--out DIR] [--device cuda:N]

For each case (rules bp, fa, dfa, ifa, drtp, brsf on a 2x32 tanh MLP, dfa with the hand-written
fast step, and dfa on a tiny conv net), each with dropout 0 and 0.5, it trains on 288 fake MNIST
examples (4 full batches of 64, then an eager partial batch of 32 after the captured steps), for
5 epochs with ``lr_schedule=step`` halving the LR every 2 epochs, and stops each run once by
SIGTERM mid-epoch and resumes it from its checkpoint. Then it compares, per epoch (losses,
errors, LR) and by the final parameters:

- eager, resumed, against eager, uninterrupted (on every device; on the CPU bit for bit);
- on a GPU: the graph run (``trainer.cuda_graph=on``), resumed, against the eager one
  (``trainer.cuda_graph=off``), resumed. They must agree to float rounding.

Graph runs capture with torch's ``check_input_liveness`` (every tensor the graph reads from
outside its pool must be alive at each replay: in torch 2.14 an argument of ``torch.cuda.graph``,
not of ``CUDAGraph.replay``, which then checks by itself) and the "CUDA Graph is empty" warning is
an error. On a machine without CUDA the graph half is skipped, and says so. Exit status 1 when a
comparison fails. The last GPU is used, so a machine with several GPUs checks ``cuda:N``, N > 0.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]   # (the tests' fake MNIST, conftest.write_fake_mnist)

from hydra import compose, initialize_config_dir  # noqa: E402

from conftest import write_fake_mnist  # noqa: E402
from dfa_cli.training import engine, graph  # noqa: E402
from dfa_cli.config import CONFIG_PATH  # noqa: E402
from dfa_cli.run import train  # noqa: E402
from dfa_cli.runs.signals import Interrupted  # noqa: E402

N_TRAIN, N_TEST, EPOCHS, STEP_EPOCHS, LR = 288, 128, 5, 2, 1e-3
INTERRUPT_AT = 4 + 1     # full steps counted over the run: epoch 2, after its first step
# Graph runs capture 3 times: epoch 1; after the resume (which drops the graph) epoch 2 is warm-up
# steps only, then each LR halving (after epochs 2 and 4) drops the graph again: epochs 3 and 5.
EXPECTED_CAPTURES = 3
FC = ["model=fc800x2", "model.width=32"]
CONV = ["model=conv", "model.channels=[4,8]", "model.fc=[16]"]
CASES = {**{rule: [*FC, f"method={rule}"] for rule in ("bp", "fa", "dfa", "ifa", "drtp", "brsf")},
         "dfa-fast": [*FC, "method=dfa", "trainer.fast_step=true"],
         "conv-dfa": [*CONV, "method=dfa"]}
LOSS_TOL, PARAM_TOL = 1e-4, 1e-4   # float rounding, after 5 epochs of a small net
METRIC_KEYS = ("train_loss", "train_error", "test_loss", "test_error")


class Probe:
    """Counts full steps (to interrupt one), captures and replays; keeps each run's final parameters."""

    def __init__(self):
        self.stop_at, self.steps, self.captures, self.replays, self.final = None, 0, 0, 0, None
        step, capture, call, fit = (engine.Trainer._step, graph.CapturedStep._capture,
                                    graph.CapturedStep.__call__, engine.Trainer.fit)
        probe = self

        def counted_step(trainer, idx):
            step(trainer, idx)
            probe.steps += 1
            if probe.steps == probe.stop_at:
                os.kill(os.getpid(), signal.SIGTERM)   # the engine checkpoints after this step and stops

        def counted_capture(captured, idx):
            probe.captures += 1
            capture(captured, idx)

        def counted_call(captured, idx, device):
            probe.replays += captured.graph is not None or captured.warmup_left == 0
            call(captured, idx, device)

        def kept_fit(trainer, resume=None):
            out = fit(trainer, resume)
            probe.final = {k: v.detach().double().cpu().clone() for k, v in trainer.model.state_dict().items()}
            return out
        engine.Trainer._step, graph.CapturedStep._capture = counted_step, counted_capture
        graph.CapturedStep.__call__, engine.Trainer.fit = counted_call, kept_fit


def config(root: Path, case: list[str], dropout: float, device: str, cuda_graph: str):
    extra = [f"dropout.conv=[{dropout},{dropout}]"] if "model=conv" in case else []
    overrides = [*case, *extra, f"dropout.hidden={dropout}", "dropout.input=0", f"data.root={root}",
                 "data.download=false", f"optim.lr={LR}", f"trainer.max_epochs={EPOCHS}",
                 "trainer.stop_train_error=0", "trainer.lr_schedule=step", f"trainer.lr_step_epochs={STEP_EPOCHS}",
                 "trainer.progress=false", f"trainer.cuda_graph={cuda_graph}", f"device={device}"]
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def run(probe: Probe, cfg, run_dir: Path, interrupt: bool) -> dict:
    """One run (stopped once and resumed when ``interrupt``) → its epochs' rows and final parameters."""
    probe.steps, probe.captures, probe.replays, probe.final = 0, 0, 0, None
    probe.stop_at = INTERRUPT_AT if interrupt else None
    if interrupt:
        try:
            train(cfg, run_dir)
            raise AssertionError("the run was not interrupted")
        except Interrupted:
            pass
        train(cfg, run_dir, resume=True)
    else:
        train(cfg, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"rows": rows, "params": probe.final, "captures": probe.captures, "replays": probe.replays}


def differences(a: dict, b: dict) -> dict:
    """Largest absolute differences between two runs: per-epoch losses, errors, final parameters."""
    if len(a["rows"]) != len(b["rows"]):
        return {"epochs": (len(a["rows"]), len(b["rows"]))}
    diff = lambda key: max(abs(x[key] - y[key]) for x, y in zip(a["rows"], b["rows"]))  # noqa: E731
    return {"loss": max(diff("train_loss"), diff("test_loss")),
            "train_error": diff("train_error"), "test_error": diff("test_error"),
            "lr_equal": [r["lr"] for r in a["rows"]] == [r["lr"] for r in b["rows"]],
            "params": max((a["params"][k] - b["params"][k]).abs().max().item() for k in a["params"])}


def agree(d: dict) -> bool:
    """To float rounding: losses and parameters within tolerance; an error rate may differ by one
    borderline example (100/288 % of the training set, 100/128 % of the test set)."""
    return ("epochs" not in d and d["lr_equal"] and d["loss"] <= LOSS_TOL and d["params"] <= PARAM_TOL
            and d["train_error"] <= 100 / N_TRAIN + 1e-9 and d["test_error"] <= 100 / N_TEST + 1e-9
            and all(math.isfinite(v) for v in (d["loss"], d["params"])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for graph_vs_eager.json")
    parser.add_argument("--device", default=None, help="cpu, or cuda:N (default: the last GPU, else cpu)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    args = parser.parse_args()
    device = args.device or (f"cuda:{torch.cuda.device_count() - 1}" if torch.cuda.is_available() else "cpu")
    on_gpu = device.startswith("cuda")
    if on_gpu:
        graph.CHECK_INPUT_LIVENESS = True
        warnings.filterwarnings("error", message=".*CUDA Graph is empty.*")
        print(f"device {device}: {torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}")
    else:
        torch.set_num_threads(1)
        print(f"device cpu, torch {torch.__version__}: no CUDA here, so the graph half is SKIPPED; "
              f"checking the eager half (resumed = uninterrupted) only")
    probe, results, failed = Probe(), [], False
    expected_lrs = [LR * 0.5 ** ((e - 1) // STEP_EPOCHS) for e in range(1, EPOCHS + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fake_mnist(Path(tmp) / "data", n_train=N_TRAIN, n_test=N_TEST)
        print(f"{'case':<10} {'dropout':>7}  {'check':<16} {'max|Δloss|':>10} {'max|Δerr|':>9} "
              f"{'max|Δparam|':>11} {'captures':>8} {'replays':>7}  ok")
        for name in args.cases.split(","):
            for dropout in (0.0, 0.5):
                t0 = time.perf_counter()
                folder = Path(tmp) / f"{name}-{dropout}"
                eager_ref = run(probe, config(root, CASES[name], dropout, device, "off"), folder / "ref", False)
                eager = run(probe, config(root, CASES[name], dropout, device, "off"), folder / "eager", True)
                checks = [("resumed/uninterr.", differences(eager, eager_ref), eager)]
                lrs_ok = [r["lr"] for r in eager["rows"]] == expected_lrs
                if on_gpu:
                    graphed = run(probe, config(root, CASES[name], dropout, device, "on"), folder / "graph", True)
                    checks.append(("graph/eager", differences(graphed, eager), graphed))
                    lrs_ok = lrs_ok and graphed["captures"] == EXPECTED_CAPTURES and graphed["replays"] > 0
                for label, d, r in checks:
                    ok = agree(d) and lrs_ok
                    failed |= not ok
                    err = max(d.get("train_error", math.nan), d.get("test_error", math.nan))
                    print(f"{name:<10} {dropout:>7}  {label:<16} {d.get('loss', math.nan):>10.2e} {err:>9.3f} "
                          f"{d.get('params', math.nan):>11.2e} {r['captures']:>8} {r['replays']:>7}  "
                          f"{'ok' if ok else 'FAIL'}", flush=True)
                    results.append({"case": name, "dropout": dropout, "check": label, **d, "lr_schedule_ok": lrs_ok,
                                    "captures": r["captures"], "replays": r["replays"], "ok": ok,
                                    "seconds": time.perf_counter() - t0})
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "graph_vs_eager.json").write_text(json.dumps(
            {"device": device, "torch": torch.__version__, "graph_half": "run" if on_gpu else "skipped (no CUDA)",
             "results": results}, indent=1))
    print("graph vs eager: " + ("FAILED" if failed else "all agree")
          + ("" if on_gpu else " (eager half only; the GPU half was skipped: no CUDA on this machine)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
