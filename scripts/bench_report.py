"""How long ``dfa-report`` takes to read N run records (issue 49: 1,200 records in at most 1.5 s).

    python scripts/bench_report.py                    # 1,200 records; best of 5 of each kind of call
    python scripts/bench_report.py -n 5000 --repeats 3
    python scripts/bench_report.py --profile 30       # also cProfile one call: the 30 costliest functions
    python scripts/bench_report.py --keep /tmp/recs   # write the records there and keep them

The records are copies of the committed MNIST records (``results/paper/mnist/*/``: summary.json,
metrics.jsonl of 30–300 epochs, .hydra/config.yaml, hydra.yaml and overrides.yaml), each copy under
a new folder name with a new seed (in summary.json, config.yaml and overrides.yaml): every one is a
distinct run of a real cell, none is dropped as a rerun, and the methods of a row share their seeds,
so the paired differences vs BP and their t-intervals are computed, as for a real campaign. Their
summary.json says ``"loss_reduction": "sum"``, as dfa-run writes today, so they fill the paper
tables; ``--as-committed`` leaves that key out, as in the committed (batch-mean) records, which then
fill only "other runs".

Each kind of call reads them as ``dfa-report DIR --format csv``:

- command: ``python -m dfa_cli.report DIR --format csv`` in a fresh process (what a user waits for:
  the imports of pandas and the rest included);
- in process, first call: ``dfa_cli.report.cli.main([DIR, "--format", "csv"])``, stdout captured, in
  this process, which has not imported the report yet (its imports included);
- in process, later calls: the same, imports done (the reading and the tables alone).

Each row gives the best wall time and its CPU time (user + system), then every wall time. The CPU is
named from /proc/cpuinfo and the 1-minute load average is printed: other jobs on the machine slow
every number, the wall times most.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "results" / "paper" / "mnist"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def write_records(target: Path, n: int, source: Path = SOURCE, step: str | None = "sum") -> int:
    """``n`` run folders under ``target``, copied from the records under ``source``, each with its own seed;
    ``step``: the ``loss_reduction`` their summary.json says (None: as committed, without the key)."""
    templates = sorted(p for p in source.iterdir() if (p / "summary.json").is_file())
    if not templates:
        raise SystemExit(f"no records under {source}")
    texts = [{rel: (p / rel).read_text(encoding="utf-8") for rel in
              ("summary.json", "metrics.jsonl", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")
              if (p / rel).is_file()} for p in templates]
    seeds = [int(re.search(r'^  "seed": (\d+),$', t["summary.json"], re.M)[1]) for t in texts]
    for i in range(n):
        k, copy = i % len(templates), i // len(templates)
        # copy c of seed s is seed s + 100 (c + 1): every method of a row runs the same seeds, as in a
        # campaign, so the paired differences vs BP are computed as they would be for real records
        seed = seeds[k] + 100 * (copy + 1)
        folder = target / f"{templates[k].name}_copy{i:05d}"
        (folder / ".hydra").mkdir(parents=True)
        for rel, text in texts[k].items():
            if rel == "summary.json":
                text = re.sub(r'^  "seed": \d+,$', f'  "seed": {seed},', text, count=1, flags=re.M)
                if step and '"loss_reduction"' not in text:
                    text = text.replace('\n  "loss": ', f'\n  "loss_reduction": "{step}",\n  "loss": ', 1)
            elif rel == ".hydra/config.yaml":
                text = re.sub(r"^seed: \d+$", f"seed: {seed}", text, count=1, flags=re.M)
            elif rel == ".hydra/overrides.yaml":
                text = re.sub(r"^- seed=\d+$", f"- seed={seed}", text, count=1, flags=re.M)
            (folder / rel).write_text(text, encoding="utf-8")
    return len(templates)


def report_once(directory: Path) -> tuple[float, float, str]:
    """One in-process ``dfa-report DIR --format csv``: (wall s, CPU s of this process, stdout)."""
    from dfa_cli.report.cli import main
    out, err = io.StringIO(), io.StringIO()
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(directory), "--format", "csv"])
        except SystemExit as exit_:
            if exit_.code:
                raise RuntimeError(f"dfa-report exited {exit_.code}: {err.getvalue().strip()}") from None
    return time.perf_counter() - wall, time.process_time() - cpu, out.getvalue()


def command_once(directory: Path) -> tuple[float, float]:
    """``python -m dfa_cli.report DIR --format csv`` in a fresh process: (wall s, CPU s, user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dfa_cli.report", str(directory), "--format", "csv"], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _row(name: str, runs: list[tuple[float, float]]) -> str:
    wall, cpu = min(runs)
    return (f"{name:<34} best {wall:6.3f} s wall ({cpu:.3f} s CPU)   all: "
            + ", ".join(f"{w:.3f}" for w, _ in runs))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=1200, help="run records to write (default 1200)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls of each kind (default 5)")
    p.add_argument("--as-committed", action="store_true",
                   help="leave summary.json without loss_reduction, as the committed records are (batch-mean "
                        "records: they fill no paper cell by default, only 'other runs')")
    p.add_argument("--no-command", action="store_true", help="time only the in-process calls")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="also profile one in-process call with cProfile and print its K costliest calls")
    p.add_argument("--keep", type=Path, metavar="DIR", help="write the records to DIR (must not exist) and keep them")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    if args.keep:
        args.keep.mkdir(parents=True)
        directory, cleanup = args.keep, None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="bench-report-")
        directory = Path(cleanup.name)
    try:
        kinds = write_records(directory, args.n, step=None if args.as_committed else "sum")
        commands = [] if args.no_command else [command_once(directory) for _ in range(args.repeats)]
        first_wall, first_cpu, csv = report_once(directory)
        calls = [report_once(directory)[:2] for _ in range(args.repeats)]
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        step = "as committed (batch mean)" if args.as_committed else "loss_reduction sum"
        print(f"dfa-report DIR --format csv on {args.n} records ({kinds} committed MNIST records copied, {step}); "
              f"csv: {len(csv.splitlines())} lines")
        print(f"cpu: {cpu_name()} ({os.cpu_count()} cores), load average (1 min) {load:.2f}")
        if commands:
            print(_row("command (fresh process, imports):", commands))
        print(_row("in process, first call (imports):", [(first_wall, first_cpu)]))
        print(_row("in process, later calls:", calls))
        if args.profile:
            import cProfile
            import pstats
            profiler = cProfile.Profile()
            profiler.enable()
            report_once(directory)
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(args.profile)
    finally:
        if cleanup is not None:
            cleanup.cleanup()


if __name__ == "__main__":
    main()
