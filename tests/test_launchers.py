"""Launchers: joblib (parallel on this machine), submitit (its local executor for real; the SLURM preset)."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from dfa_cli.runs import checkpoint as ckpt
from dfa_cli.runs.records import METRICS
from dfa_cli.run import CONFIG_PATH, gpu_for_job

from conftest import run_cli
from survive import ENV, long_mnist, overrides, records, reference, start_cli, wait_for_epochs


def needs(plugin: str):
    return pytest.mark.skipif(importlib.util.find_spec(f"hydra_plugins.{plugin}") is None,
                              reason=f"{plugin} is not installed: pip install -e '.[cluster]'")


def tiny(fake_mnist, root):
    return ("model=fc800x1", "model.width=8", "trainer.max_epochs=1", f"data.root={fake_mnist}",
            "data.download=false", "trainer.progress=false", f"results_dir={root}")


def complete_records(root: Path, epochs: int = 1) -> list[dict]:
    found = []
    for summary in sorted(root.rglob("summary.json")):
        rows = (summary.parent / METRICS).read_text().splitlines()
        assert (summary.parent / ".hydra" / "config.yaml").is_file()
        assert [json.loads(r)["epoch"] for r in rows] == list(range(1, epochs + 1))
        found.append(json.loads(summary.read_text()))
    return found


@pytest.mark.slow   # joblib's worker processes start and import torch (~30 s)
@needs("hydra_joblib_launcher")
def test_eight_parallel_jobs_into_one_root_give_eight_complete_records(fake_mnist, tmp_path):
    root = tmp_path / "res"
    out = run_cli("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2,3,4,5,6,7",
                  *tiny(fake_mnist, root), env=ENV)
    assert out.returncode == 0, out.stderr
    found = complete_records(root)
    assert sorted(s["seed"] for s in found) == list(range(8))
    assert len({p.parent for p in root.rglob("summary.json")}) == 8
    assert not [p for p in root.rglob("*.tmp")] and not list(root.rglob(ckpt.CHECKPOINT))


def submitit_task_pids(folder: Path, n: int, timeout: float = 60) -> list[int]:
    """The pids of the ``n`` submitit tasks (``python -m submitit.core._submit <folder>/…``) of a sweep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "submitit.core._submit" in args and any(a.startswith(str(folder)) for a in args):
                pids.append(int(cmdline.parent.name))
        if len(pids) == n:
            return pids
        time.sleep(0.05)
    raise AssertionError("the submitit tasks did not start")


@pytest.mark.slow   # submitit's tasks, one preempted and requeued (~50 s)
@needs("hydra_submitit_launcher")
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the jobs' processes in /proc")
def test_submitit_local_runs_a_two_job_sweep_and_a_preempted_job_requeues_and_resumes_by_itself(tmp_path):
    """The real requeue path: submitit's USR2 (preemption, or its time limit coming) → our checkpoint
    after the current step → submitit requeues the job → the new process finds the checkpoint in its
    run directory and resumes, with no flag → the records equal an uninterrupted run's."""
    data = long_mnist(tmp_path / "data")
    sweep = tmp_path / "sweep"
    proc = start_cli("-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}", "seed=0,1", *overrides(data))
    pids = submitit_task_pids(sweep, 2)
    jobs = [sweep / f"{n}_mnist_fc32x1_tanh_paper_dfa_s{n}" for n in (0, 1)]
    wait_for_epochs(proc, jobs[0], 1)
    os.kill(min(pids), signal.SIGUSR2)  # (most likely job 0's task: it was started first)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    logs = "".join(p.read_text() for p in sorted(sweep.glob(".submitit/*/*_log.out")))
    assert logs.count("[submitit][INFO] - Requeued job") == 1, logs[-3000:]
    (resumed,) = [job for job in jobs if f"[dfa_cli][INFO] - resuming {job} at epoch" in logs]
    seed = jobs.index(resumed)
    assert records(resumed) == reference(data, tmp_path / "ref", *([f"seed={seed}"] if seed else []))
    assert sorted(s["seed"] for s in complete_records(sweep, epochs=4)) == [0, 1]


def test_the_slurm_preset_exposes_the_usual_keys():
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not installed: pip install -e '.[cluster]'")
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                 "hydra.launcher.gpus_per_node=2", "hydra.launcher.timeout_min=90",
                                 "hydra.launcher.array_parallelism=8"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min, launcher.array_parallelism) == \
        ("gpu", 2, 90, 8)
    assert launcher.max_num_timeout > 0  # time-limited jobs are requeued, and resume


def test_parallel_jobs_get_one_gpu_each():
    cuda = torch.device("cuda")
    assert [gpu_for_job(cuda, n, 4).index for n in range(6)] == [0, 1, 2, 3, 0, 1]
    assert gpu_for_job(cuda, 3, 1) == cuda                       # one GPU: nothing to choose
    assert gpu_for_job(cuda, None, 4) == cuda                    # not a parallel job
    assert gpu_for_job(torch.device("cuda", 2), 5, 4).index == 2  # an explicit choice stands
    assert gpu_for_job(torch.device("cpu"), 5, 4).type == "cpu"
