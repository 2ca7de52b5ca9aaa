"""The resumable campaign (dfa_cli/campaign.py, scripts/reproduce.py): order, records, resumption."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfa_cli.campaign import Campaign, Job, Running, stage_order

from conftest import REPO, load_script

reproduce = load_script("reproduce")


def tiny_jobs(root: Path, epochs: int = 3) -> list[Job]:
    base = [f"data.root={root}", "data.download=false", "model=fc800x1", "model.width=16",
            f"trainer.max_epochs={epochs}", "device=cpu"]
    return [Job("mnist/a_dfa_s0", base + ["method=dfa"], (0,)),
            Job("mnist/b_bp_s1", base + ["method=bp"], (1,)),
            Job("mnist/c_fa_s0-1", base + ["method=fa"], (0, 1), record_names=["mnist/c_fa_s0", "mnist/c_fa_s1"])]


def test_table1_plan_orders_seed_0_of_every_cell_first_cheapest_first():
    jobs = reproduce.table1_jobs([0, 1, 2, 3, 4])
    names = [j.name for j in jobs]
    seeds = [j.seeds[0] for j in jobs]
    first_pass = 28 + 2 + len(reproduce.SEARCH)           # 30 cells (100x240 BP/FA bounded) + the search
    assert seeds[:first_pass] == [0] * first_pass
    assert set(seeds[first_pass:first_pass + 2 * 28]) == {1, 2} and set(seeds[first_pass + 56:]) == {3, 4}
    costs = [j.cost for j in jobs[:first_pass]]
    assert costs == sorted(costs)
    assert all(n.startswith("mnist-validation/") for n in names[:len(reproduce.SEARCH)])   # it gates a row
    assert names[len(reproduce.SEARCH)].startswith("mnist/fc800x1_tanh_")
    assert names[first_pass - 1] == "mnist/fc240x100_tanh_dfa_s0"
    deep_bp = next(j for j in jobs if j.name == "mnist/fc240x100_tanh_bp_s0")
    assert "trainer.max_epochs=30" in deep_bp.overrides
    assert not any(j.name.startswith("mnist/fc240x100_tanh_bp_s1") for j in jobs)   # one seed only
    search = [j for j in jobs if j.name.startswith("mnist-validation/")]
    assert len(search) == len(reproduce.SEARCH) and all("data.split=validation" in j.overrides for j in search)


def test_the_dropout_row_waits_until_its_preset_names_the_chosen_schedule(tmp_path, monkeypatch):
    preset = tmp_path / f"{reproduce.DROPOUT_ROW}.yaml"
    preset.write_text("# @package _global_\ndropout:\n  input: 0.1\ntrainer:\n  max_epochs: 300\n")
    monkeypatch.setattr(reproduce, "PRESETS", tmp_path)
    dropout = [j for j in reproduce.table1_jobs([0]) if reproduce.DROPOUT_ROW in j.name and j.name.startswith("mnist/")]
    assert dropout and all(j.waits_for and "validation" in j.waits_for for j in dropout)
    preset.write_text("# @package _global_\ntrainer:\n  lr_schedule: step\n")
    assert all(j.waits_for is None for j in reproduce.table1_jobs([0]) if reproduce.DROPOUT_ROW in j.name)


def test_stage_order_handles_any_seeds():
    jobs = [(s, Job(f"j{s}_{c}", [], (s,), cost=c)) for s in (7, 3, 0, 1) for c in (2.0, 1.0)]
    assert [j.name for j in stage_order(jobs, [0, 1, 3, 7])] == [
        "j0_1.0", "j0_2.0", "j1_1.0", "j1_2.0", "j3_1.0", "j3_2.0", "j7_1.0", "j7_2.0"]


def test_campaign_runs_collects_records_and_skips_what_is_done(fake_mnist, tmp_path):
    out = io.StringIO()
    records, state = tmp_path / "records", tmp_path / "state"
    assert Campaign(tiny_jobs(fake_mnist), records, state, out=out).run() == 0
    names = ["a_dfa_s0", "b_bp_s1", "c_fa_s0", "c_fa_s1"]
    for name in names:
        folder = records / "mnist" / name
        assert sorted(p.name for p in folder.iterdir()) == [".hydra", "metrics.jsonl", "summary.json"]
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 3
    assert json.loads((records / "mnist/c_fa_s1/summary.json").read_text())["seed"] == 1
    assert json.loads((records / "mnist/a_dfa_s0/summary.json").read_text())["threads"] == 1
    again = io.StringIO()
    assert Campaign(tiny_jobs(fake_mnist), records, state, out=again).run() == 0
    assert "start" not in again.getvalue()                                   # nothing rerun
    rows = Campaign(tiny_jobs(fake_mnist), records, state).status()
    assert [r["job"] for r in rows] == [f"mnist/{n}" for n in names] and {r["state"] for r in rows} == {"done"}


def test_a_stopped_campaign_resumes_its_runs_from_their_checkpoints(fake_mnist, tmp_path):
    """SIGTERM to the runner: every job checkpoints; the same command then finishes them."""
    records, state = tmp_path / "records", tmp_path / "state"
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r})\n"
              "from pathlib import Path\nfrom test_campaign import tiny_jobs\nfrom dfa_cli.campaign import Campaign\n"
              f"sys.exit(Campaign(tiny_jobs(Path({str(fake_mnist)!r}), epochs=400)[:1], Path({str(records)!r}), "
              f"Path({str(state)!r})).run())\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    metrics = state / "runs" / "mnist" / "a_dfa_s0" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert "paused mnist/a_dfa_s0" in output
    done_before = len(metrics.read_text().splitlines())
    assert not (records / "mnist" / "a_dfa_s0").exists() and (state / "runs/mnist/a_dfa_s0/checkpoint.pt").exists()
    out = io.StringIO()
    assert Campaign(tiny_jobs(fake_mnist, epochs=400)[:1], records, state, out=out).run() == 0
    assert "resume mnist/a_dfa_s0" in out.getvalue()
    rows = (records / "mnist/a_dfa_s0/metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) > done_before


def test_a_job_left_running_alone_takes_the_freed_slots_threads(fake_mnist, tmp_path):
    """Two one-thread slots: when the short job ends and nothing is queued, the long one is paused
    with a checkpoint and resumed with two threads (a resumed run equals the uninterrupted one:
    test_resume.py), and its records go on without a gap."""
    records, state = tmp_path / "records", tmp_path / "state"
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r})\n"
              "from pathlib import Path\nfrom test_campaign import tiny_jobs\nfrom dfa_cli import campaign\n"
              "campaign.POLL_SECONDS = 0.2\n"
              f"root = Path({str(fake_mnist)!r})\n"
              "jobs = [tiny_jobs(root, epochs=1)[0], tiny_jobs(root, epochs=100000)[1]]\n"
              f"sys.exit(campaign.Campaign(jobs, Path({str(records)!r}), Path({str(state)!r}), widen_after=0).run())\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, text=True)
    log, deadline = "", time.time() + 120
    while time.time() < deadline and "with 2 threads" not in log:
        log += proc.stdout.readline()
    metrics = state / "runs" / "mnist" / "b_bp_s1" / "metrics.jsonl"

    def epochs() -> int:
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0
    widened_at = epochs()
    while time.time() < deadline and epochs() < widened_at + 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    log += proc.communicate(timeout=120)[0]
    assert "resume mnist/b_bp_s1 with 2 threads" in log and "FAILED" not in log, log
    assert "b_bp_s1 with" not in log.split("done   mnist/a_dfa_s0")[0]   # only once a slot is free
    rows = [json.loads(r) for r in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= widened_at + 3
    threads = [r["threads"] for r in rows]   # each epoch names its own: one thread, then two
    assert threads == sorted(threads) and set(threads) <= {1, 2} and threads[-3:] == [2, 2, 2], threads


def test_only_a_freed_slot_widens_a_running_job(tmp_path):
    class LiveProcess:                   # a job's process, still running
        def __init__(self):
            self.signals = []

        def poll(self):
            return None

        def send_signal(self, sig):
            self.signals.append(sig)
    job = Job("mnist/a_dfa_s0", [], (0,))
    for parallel, queued, widened in ((1, [], {}), (2, [job], {}), (2, [], {job.name: 2})):
        campaign, proc = Campaign([job], tmp_path, tmp_path, parallel=parallel, widen_after=0), LiveProcess()
        campaign.running[job.name] = Running(job, proc, 0.0, 1)
        campaign._widen(queued)
        assert campaign.widening == widened and proc.signals == ([signal.SIGTERM] if widened else [])


def test_a_run_from_a_changed_config_is_set_aside_and_started_over(fake_mnist, tmp_path):
    records, state = tmp_path / "records", tmp_path / "state"
    job = tiny_jobs(fake_mnist)[0]
    Campaign([job], records, state).run()
    (records / "mnist/a_dfa_s0/summary.json").unlink()                     # not done, as if never collected
    (state / "runs/mnist/a_dfa_s0/summary.json").unlink()
    changed = Job(job.name, job.overrides + ["optim.lr=0.0003"], job.seeds)
    out = io.StringIO()
    assert Campaign([changed], records, state, out=out).run() == 0
    assert "different config" in out.getvalue()
    assert json.loads((records / "mnist/a_dfa_s0/summary.json").read_text())["lr"] == pytest.approx(3e-4)
    assert list((state / "runs" / "mnist").glob("a_dfa_s0.stale-*"))


def test_search_summary_finds_each_candidates_best_window(tmp_path):
    """The validation curve's best SEARCH_WINDOW-epoch mean, by hand on a made-up curve."""
    folder = tmp_path / f"mnist-validation/{reproduce.DROPOUT_ROW}_step50_dfa_s0"
    folder.mkdir(parents=True)
    errors = [5.0, 4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 4.0]   # best window: epochs 5..9, mean 1.0
    folder.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"epoch": i + 1, "val_error": e, "train_error": e + 1}) + "\n" for i, e in enumerate(errors)))
    rows = {r["candidate"]: r for r in reproduce.search_summary(tmp_path)}
    step50 = rows["step50"]
    assert step50["state"] == "running" and step50["epochs"] == 11
    assert step50["best_window_val_error"] == pytest.approx(1.0) and step50["best_window_end_epoch"] == 9
    assert step50["final_val_error"] == 4.0 and step50["best_single_val_error"] == 1.0
    assert rows["constant"]["state"] == "not finished"


def test_search_choice_takes_the_lowest_window_once_every_candidate_is_done(tmp_path):
    """Nothing is chosen while a candidate runs; then the lowest best-window error wins, and training
    time is where its window ends."""
    def curve(name, errors, done=True):
        folder = tmp_path / f"mnist-validation/{reproduce.DROPOUT_ROW}_{name}_dfa_s0"
        folder.mkdir(parents=True, exist_ok=True)
        folder.joinpath("metrics.jsonl").write_text("".join(
            json.dumps({"epoch": i + 1, "val_error": e, "train_error": e}) + "\n" for i, e in enumerate(errors)))
        if done:
            folder.joinpath("summary.json").write_text(json.dumps({"stop_reason": "max_epochs"}))
    for name in reproduce.SEARCH:
        curve(name, [3.0] * 10, done=name != "step50")
    curve("lr3e-4_step100", [3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 3.0])   # best window ends at epoch 7
    assert reproduce.search_choice(reproduce.search_summary(tmp_path)) is None   # step50 still running
    curve("step50", [2.9] * 10)                          # flat: the earliest window wins the tie
    choice = reproduce.search_choice(reproduce.search_summary(tmp_path))
    assert choice["candidate"] == "lr3e-4_step100" and choice["best_window_end_epoch"] == 7
    assert choice["settings"] == {"optim.lr": 3e-4, "trainer.lr_schedule": "step",
                                  "trainer.lr_step_epochs": 100, "trainer.max_epochs": 7}
    curve("lr3e-4_step100", [3.0] * 10)
    choice = reproduce.search_choice(reproduce.search_summary(tmp_path))
    assert choice["candidate"] == "step50"
    assert choice["settings"] == {"optim.lr": 1e-4, "trainer.lr_schedule": "step", "trainer.lr_step_epochs": 50,
                                  "trainer.max_epochs": 5}


def test_search_candidates_pin_the_protocol_defaults_whatever_the_preset_chose():
    """Rerun after the preset names its choice, the candidates must still train what they name."""
    from conftest import compose_config
    prefix = f"mnist-validation/{reproduce.DROPOUT_ROW}_"
    jobs = {j.name.removeprefix(prefix).removesuffix("_dfa_s0"): j for j in reproduce.search_jobs()}
    constant = compose_config(*jobs["constant"].overrides)
    assert (constant.optim.lr, constant.trainer.lr_schedule, constant.trainer.max_epochs) == (1e-4, "constant", 300)
    assert constant.data.split == "validation" and constant.method.name == "dfa"
    fast = compose_config(*jobs["lr3e-4_step100"].overrides)
    assert (fast.optim.lr, fast.trainer.lr_schedule, fast.trainer.lr_step_epochs) == (3e-4, "step", 100)


def test_a_job_too_long_to_run_alone_at_the_end_of_its_stage_starts_early(tmp_path):
    """Cheapest first, until the stage's longest job costs as much as the rest of it per other slot."""
    campaign = Campaign([], tmp_path / "records", tmp_path / "state", parallel=2)

    def queue(*costs, seed=0):
        return [Job(f"j{i}", [], (seed,), cost=c) for i, c in enumerate(costs)]
    assert campaign._next(queue(1, 1, 1, 10)) == 3               # 10 ≥ 3: the long one now
    q = queue(5, 5, 5, 10)
    order = []
    while q:
        order.append(q.pop(campaign._next(q)).cost)
    assert order == [5, 10, 5, 5]                                 # 10 ≥ 5 + 5 once one 5 is gone
    stages = queue(1, 1, seed=0) + queue(100, seed=1)
    assert campaign._next(stages) == 0                           # never ahead of an earlier stage
    assert Campaign([], tmp_path, tmp_path, parallel=1)._next(queue(1, 10)) == 0
    three = Campaign([], tmp_path, tmp_path, parallel=3)
    assert three._next(queue(4, 4, 4, 5)) == 0 and three._next(queue(4, 4, 4, 6)) == 3   # rest / 2 slots
