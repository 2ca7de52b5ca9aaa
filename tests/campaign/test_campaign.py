"""The resumable campaign runner (dfa_cli/campaign/runner.py): records, resumption, widening, order within a stage."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dfa_cli.campaign import runner as campaign_runner
from dfa_cli.campaign.runner import Campaign, Job, Running

from conftest import REPO, load_script

HERE = Path(__file__).resolve().parent   # (the runner scripts below import this module)


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    """The runner looks at its jobs every 0.2 s instead of 2 (tiny jobs end within a poll or two)."""
    monkeypatch.setattr(campaign_runner, "POLL_SECONDS", 0.2)


def tiny_jobs(root: Path, epochs: int = 3) -> list[Job]:
    base = [f"data.root={root}", "data.download=false", "model=fc800x1", "model.width=16",
            f"trainer.max_epochs={epochs}", "device=cpu"]
    return [Job("mnist/a_dfa_s0", base + ["method=dfa"], (0,)),
            Job("mnist/b_bp_s1", base + ["method=bp"], (1,)),
            Job("mnist/c_fa_s0-1", base + ["method=fa"], (0, 1), record_names=["mnist/c_fa_s0", "mnist/c_fa_s1"])]


def test_campaign_runs_collects_records_and_skips_what_is_done(fake_mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")    # (the tests' own one thread would hide the runner's)
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


@pytest.mark.slow   # the runner in a process of its own, SIGTERMed mid-epoch (~30 s)
def test_a_stopped_campaign_resumes_its_runs_from_their_checkpoints(fake_mnist, tmp_path):
    """SIGTERM to the runner: every job checkpoints; the same command then finishes them."""
    records, state = tmp_path / "records", tmp_path / "state"
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.path[:0] = [{str(REPO / 'tests')!r}, {str(HERE)!r}]\n"
              "from pathlib import Path\nfrom test_campaign import tiny_jobs\nfrom dfa_cli.campaign.runner import Campaign\n"
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
    assert [json.loads(r)["epoch"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) > done_before > 0


@pytest.mark.slow   # the runner in its own process, a job paused and restarted wider (~40 s)
def test_a_job_left_running_alone_takes_the_freed_slots_threads(fake_mnist, tmp_path):
    """Two one-thread slots: when the short job ends and nothing is queued, the long one is paused
    with a checkpoint and resumed with two threads (a resumed run equals the uninterrupted one:
    test_resume.py), and its records go on without a gap."""
    records, state = tmp_path / "records", tmp_path / "state"
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.path[:0] = [{str(REPO / 'tests')!r}, {str(HERE)!r}]\n"
              "from pathlib import Path\nfrom test_campaign import tiny_jobs\nfrom dfa_cli.campaign import runner as campaign\n"
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


class LiveProcess:                       # a job's process, still running
    def __init__(self):
        self.signals = []

    def poll(self):
        return None

    def send_signal(self, sig):
        self.signals.append(sig)


def test_only_a_freed_slot_widens_a_running_job(tmp_path):
    job = Job("mnist/a_dfa_s0", [], (0,))
    for parallel, queued, widened in ((1, [], {}), (2, [job], {}), (2, [], {job.name: 2})):
        campaign, proc = Campaign([job], tmp_path, tmp_path, parallel=parallel, widen_after=0), LiveProcess()
        campaign.running[job.name] = Running(job, proc, 0.0, 1)
        campaign._widen(queued)
        assert campaign.widening == widened and proc.signals == ([signal.SIGTERM] if widened else [])


def test_jobs_that_may_not_start_before_the_deadline_leave_their_slot_to_the_running_job(tmp_path):
    """With --until, a queue can hold jobs and still start none: an earlier job too long for the time
    left waits for the next invocation (its one carry-over slot taken). The free slot's thread then
    goes to the running job; a job that may start keeps its slot."""
    running = Job("cifar10/a_dfa_s2", [], (2,), cost=3000.0, stage=1)
    too_long = Job("mnist/b_dfa_s1", [], (1,), cost=5000.0, stage=3)
    short_last = Job("mnist/c_bp_s3", [], (3,), cost=100.0, stage=4)
    for queue, widened, seconds_left in (([too_long], {running.name: 2}, 1000),
                                         ([too_long, short_last], {}, 1000),   # seeds 3–4 take the slot
                                         ([too_long], {}, -1)):   # past the deadline: paused stays paused
        campaign = Campaign([], tmp_path, tmp_path, parallel=2, widen_after=0,
                            deadline=time.time() + seconds_left, carry_over=True)
        campaign.carried.add(running.name)
        campaign.running[running.name] = Running(running, proc := LiveProcess(), 0.0, 1)
        campaign._widen(queue)
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


def test_a_runs_hidden_features_travel_with_its_record(fake_mnist, tmp_path):
    """The t-SNE runs' features.npz is part of their record (the figure is drawn from it)."""
    base = tiny_jobs(fake_mnist, epochs=1)[0]
    job = Job("mnist-figures/t_dfa_s0", base.overrides + ["diagnostics.features=true",
                                                          "diagnostics.feature_examples=20"], (0,))
    records = tmp_path / "records"
    assert Campaign([job], records, tmp_path / "state", out=io.StringIO()).run() == 0
    folder = records / job.name
    assert sorted(p.name for p in folder.iterdir()) == [".hydra", "features.npz", "metrics.jsonl", "summary.json"]
    assert json.loads((folder / "summary.json").read_text())["features"]


def test_with_a_deadline_only_jobs_that_fit_start_longest_first(tmp_path):
    """--until: a job's expected time comes from its cell's committed records (any seed), else the
    plan's estimate, less what its unfinished run has spent; the longest that fits goes first."""
    records, state = tmp_path / "records", tmp_path / "state"
    for name, wall in (("mnist/a_dfa_s0", 1000.0), ("mnist/a_dfa_s1", 3000.0)):
        (records / name).mkdir(parents=True)
        (records / name / "summary.json").write_text(json.dumps({"wall_seconds": wall}))
    seen = Job("mnist/a_dfa_s2", [], (2,), cost=10.0, stage=1)        # its cell's records: 2000 s
    new = Job("mnist/b_bp_s0", [], (0,), cost=500.0, stage=1)          # no record: the plan's 500 s
    later = Job("mnist/c_fa_s3", [], (3,), cost=100.0, stage=2)
    started = state / "runs" / "mnist" / "a_dfa_s2"
    started.mkdir(parents=True)
    (started / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "elapsed": 1500.0}) + "\n")

    def campaign(seconds_left):
        return Campaign([], records, state, deadline=time.time() + seconds_left)
    assert campaign(0).expected_seconds(seen) == pytest.approx(500.0)   # 2000 − 1500 spent
    assert campaign(0).expected_seconds(new) == pytest.approx(500.0)
    (started / "metrics.jsonl").unlink()
    queue = [later, new, seen]
    assert campaign(3000)._pick(queue) == 2          # 2000 s fits: the longest of phase 1
    assert campaign(1000)._pick(queue) == 1          # only the 500 s job of phase 1 fits
    assert campaign(300)._pick(new_last := [Job("mnist/d_bp_s4", [], (4,), cost=100.0, stage=3), *queue]) == 1
    assert campaign(300)._pick(queue + [new_last[0]]) == 0   # phase 2's 100 s, not the last phase's
    assert campaign(300)._pick([new_last[0]]) == 0            # the last phase once all else is done
    assert campaign(300)._pick([new, new_last[0]]) == 1       # ... or once nothing earlier fits (500 s)
    assert campaign(50)._pick(queue) is None
    assert Campaign([], records, state)._pick(queue) == 0   # no deadline: the plan's order
    (state / "runs" / "mnist" / "b_bp_s0" / ".hydra").mkdir(parents=True)
    (state / "runs" / "mnist" / "b_bp_s0" / ".hydra" / "config.yaml").write_text("{}")
    assert campaign(3000)._pick(queue) == 1          # a run already begun resumes first


def test_the_expected_time_is_scaled_by_this_machines_pace(tmp_path):
    """Records from a faster machine: an unfinished run here that takes 1.9× their seconds per epoch
    (its latest epochs' median; one slow epoch beside a test run does not count) makes every job's
    expected time 1.9× theirs. Runs whose record is done, and cells without records, say nothing.
    A rerun's cell without records of its own takes the times of the same net and rule elsewhere."""
    records, state = tmp_path / "records", tmp_path / "state"
    for name, wall, epochs in (("mnist/a_dfa_s0", 1000.0, 100), ("mnist/a_dfa_s1", 3000.0, 100),
                               ("mnist/b_bp_s0", 500.0, 50)):
        (records / name).mkdir(parents=True)
        (records / name / "summary.json").write_text(json.dumps({"wall_seconds": wall, "epochs": epochs}))
    resumed = Job("mnist/a_dfa_s2", [], (2,), stage=1)    # its cell: 20 s per epoch, 2000 s a run
    other = Job("mnist/b_bp_s1", [], (1,), stage=1)       # its cell: 10 s per epoch, 500 s a run

    def write_run(job, seconds):
        run = state / "runs" / job.name
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": i + 1, "seconds": x, "elapsed": 38.0 * (i + 1)}) + "\n"
            for i, x in enumerate(seconds)))

    def campaign(jobs):
        return Campaign(jobs, records, state, deadline=time.time() + 3600)
    assert campaign([resumed, other]).pace() == 1.0                  # nothing run here yet
    write_run(resumed, [200.0] * 5 + [38.0] * 9 + [120.0])           # 38 s where its records took 20
    assert campaign([resumed, other]).pace() == pytest.approx(1.9)
    assert campaign([resumed, other]).expected_seconds(other) == pytest.approx(950.0)
    assert campaign([resumed, other]).expected_seconds(resumed) == pytest.approx(3800.0 - 38.0 * 15)
    write_run(other, [50.0] * 3)                                     # done here: its record is there
    (records / other.name).mkdir()
    (records / other.name / "summary.json").write_text(json.dumps({"wall_seconds": 150.0, "epochs": 3}))
    assert campaign([resumed, other]).pace() == pytest.approx(1.9)
    assert campaign([Job("mnist/c_fa_s0", [], (0,))]).pace() == 1.0   # a cell without records
    rerun = Job("mnist-rerun/a_dfa_s0", [], (0,), stage=1)            # the same net and rule elsewhere
    write_run(rerun, [38.0] * 3)
    (records / "mnist" / "a_dfa_sparse_s0").mkdir()                  # another rule: not its cell
    (records / "mnist" / "a_dfa_sparse_s0" / "summary.json").write_text(json.dumps({"wall_seconds": 1.0, "epochs": 1}))
    assert campaign([rerun]).pace() == pytest.approx(1.9)
    assert campaign([rerun]).expected_seconds(rerun) == pytest.approx(2000.0 * 1.9 - 38.0 * 3)   # mnist/'s times
    widened = state / "runs" / rerun.name / "metrics.jsonl"         # its last epochs on both slots' threads
    widened.write_text(widened.read_text() + "".join(
        json.dumps({"epoch": e, "seconds": 5.0, "threads": 2}) + "\n" for e in range(4, 8)))
    assert campaign([rerun]).pace() == pytest.approx(1.9)


def test_a_cell_named_with_its_dataset_takes_the_times_of_that_datasets_cell(tmp_path):
    """The every-rule table's ``rules/mnist_<row>_<rule>`` is Table 1's ``mnist/<row>_<rule>``: with no
    records of its own it takes theirs, and not those of the same row on another dataset. Its own
    records, once there, count first, and count for the plain name too."""
    records, state = tmp_path / "records", tmp_path / "state"

    def record(name, wall, data):
        (records / name).mkdir(parents=True)
        (records / name / "summary.json").write_text(json.dumps({"wall_seconds": wall, "epochs": 100, "data": data}))
    record("mnist/a_fa_s0", 3000.0, "mnist")
    record("cifar10/a_fa_s0", 9000.0, "cifar10")
    rule = Job("rules/mnist_a_fa_s1", [], (1,), cost=600.0, stage=1)
    other_rule = Job("rules/mnist_a_ifa_s0", [], (0,), cost=600.0, stage=1)

    def campaign():
        return Campaign([], records, state, deadline=time.time() + 3600)
    assert campaign().expected_seconds(rule) == pytest.approx(3000.0)
    assert campaign().expected_seconds(other_rule) == pytest.approx(600.0)   # no record of IFA anywhere
    record("rules/mnist_a_fa_s0", 2000.0, "mnist")
    assert campaign().expected_seconds(rule) == pytest.approx(2000.0)        # its own folder first
    assert campaign().expected_seconds(Job("mnist-rerun/a_fa_s0", [], (0,))) == pytest.approx(2500.0)


def test_no_job_starts_while_a_widened_job_holds_the_threads(tmp_path):
    """Once a job took the freed slot's thread, a job that fits later (a new pace) waits for it."""
    campaign = Campaign([], tmp_path, tmp_path, parallel=2, threads=1)
    assert campaign._slot_free()
    campaign.running["mnist/a_bp_s0"] = Running(Job("mnist/a_bp_s0", [], (0,)), None, time.time(), 1)
    assert campaign._slot_free()
    campaign.running["mnist/a_bp_s0"] = Running(Job("mnist/a_bp_s0", [], (0,)), None, time.time(), 2)
    assert not campaign._slot_free()
    gpu = Campaign([], tmp_path, tmp_path, parallel=2, threads=None)
    gpu.running["mnist/a_bp_s0"] = Running(Job("mnist/a_bp_s0", [], (0,)), None, time.time(), None)
    assert gpu._slot_free()


def test_carry_over_lets_one_slot_hold_a_job_longer_than_the_time_left(tmp_path):
    """--carry-over: a job that cannot end by the deadline may take one slot, if its phase comes no
    later than every job that can; a run already begun first, else the longest of that phase."""
    records, state = tmp_path / "records", tmp_path / "state"
    short = Job("mnist/a_dfa_s1", [], (1,), cost=100.0, stage=1)
    long1 = Job("mnist/b_dfa_s1", [], (1,), cost=5000.0, stage=1)
    longer1 = Job("mnist/c_dfa_s1", [], (1,), cost=9000.0, stage=1)
    long3 = Job("mnist/d_dfa_s1", [], (1,), cost=5000.0, stage=3)
    last = Job("mnist/e_dfa_s3", [], (3,), cost=9000.0, stage=4)

    def campaign(carry_over=True, seconds_left=1000):
        return Campaign([], records, state, deadline=time.time() + seconds_left, carry_over=carry_over)
    assert campaign()._pick([short, long1, longer1]) == 2            # the longest that cannot fit
    assert campaign(carry_over=False)._pick([short, long1, longer1]) == 0
    assert campaign()._pick([short, long3]) == 0                      # no jumping the plan's phases
    assert campaign()._pick([long3, last]) == 0                       # the carry goes to the earlier phase
    short_last = Job("mnist/f_dfa_s4", [], (4,), cost=100.0, stage=4)
    assert campaign()._pick([long1, short_last]) == 0                 # the carried job first ...
    busy_slot = campaign()
    busy_slot.carried.add(long1.name)
    assert busy_slot._pick([longer1, short_last]) == 1                # ... then seeds 3–4 that end in time
    assert campaign(carry_over=False)._pick([long3]) is None
    busy = campaign()
    busy.carried.add("mnist/x_bp_s0")                                 # one slot already carries a job
    assert busy._pick([short, long1]) == 0 and busy._pick([long1]) is None
    assert campaign(seconds_left=-1)._pick([long1]) is None          # past the deadline: nothing new
    (state / "runs" / "mnist" / "b_dfa_s1" / ".hydra").mkdir(parents=True)
    (state / "runs" / "mnist" / "b_dfa_s1" / ".hydra" / "config.yaml").write_text("{}")
    assert campaign()._pick([short, longer1, long1]) == 2             # begun before: resumed first


@pytest.mark.slow   # two sessions of real job processes, paused at a deadline (~30 s)
def test_a_carried_over_job_is_paused_at_the_deadline_and_resumed_next_time(fake_mnist, tmp_path):
    """The carried job checkpoints at the deadline while a job that fits runs beside it as usual;
    the next invocation resumes it first, its epochs continuing without a gap."""
    from dfa_cli.campaign import runner as campaign_module
    records, state = tmp_path / "records", tmp_path / "state"
    endless = tiny_jobs(fake_mnist, epochs=100000)[1].overrides + ["optim.lr=1e-12"]   # never converges
    long_job = Job("mnist/b_bp_s1", endless, (1,), cost=36000.0)
    short_job = Job("mnist/a_dfa_s0", tiny_jobs(fake_mnist, epochs=1)[0].overrides, (0,), cost=1.0)
    metrics = state / "runs/mnist/b_bp_s1/metrics.jsonl"

    def epochs() -> int:
        return len(metrics.read_text().splitlines()) if metrics.is_file() else 0

    def session() -> str:
        """A session whose deadline comes as soon as the carried job has logged one more epoch (within
        two minutes), however long its start takes on a loaded machine."""
        out, target = io.StringIO(), epochs() + 1
        campaign = Campaign([long_job, short_job], records, state, out=out, deadline=time.time() + 120,
                            carry_over=True, widen_after=1e9)

        def pull_in_the_deadline():
            while time.time() < campaign.deadline and epochs() < target:
                time.sleep(0.1)
            campaign.deadline = min(campaign.deadline, time.time())
        watcher = threading.Thread(target=pull_in_the_deadline, daemon=True)
        watcher.start()
        assert campaign.run() == 0
        watcher.join()
        return out.getvalue()
    old_poll, campaign_module.POLL_SECONDS = campaign_module.POLL_SECONDS, 0.2
    try:
        first = session()
        done_before = epochs()
        assert (state / "runs/mnist/b_bp_s1/checkpoint.pt").exists()
        second = session()
    finally:
        campaign_module.POLL_SECONDS = old_poll
    assert "start  mnist/b_bp_s1" in first and "pause  mnist/b_bp_s1" in first and "paused mnist/b_bp_s1" in first
    assert (records / "mnist/a_dfa_s0/summary.json").is_file() and not (records / "mnist/b_bp_s1").exists()
    assert "resume mnist/b_bp_s1" in second and "paused mnist/b_bp_s1" in second
    rows = metrics.read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) > done_before > 0


def test_a_campaign_with_no_job_that_fits_its_deadline_starts_nothing(fake_mnist, tmp_path):
    out = io.StringIO()
    jobs = [Job(j.name, j.overrides, j.seeds, cost=3600.0, record_names=j.record_names)
            for j in tiny_jobs(fake_mnist)]
    campaign = Campaign(jobs, tmp_path / "records", tmp_path / "state", out=out, deadline=time.time() + 60)
    assert campaign.run() == 0
    assert "3 jobs left; none is expected to finish by" in out.getvalue()
    assert not (tmp_path / "state" / "runs").exists()


def reproduce_refuses(capsys, *argv: str) -> str:
    """scripts/reproduce.py run in this process on ``argv``: its exit code 2 checked, its stderr."""
    with pytest.raises(SystemExit) as stop:
        load_script("reproduce").main(list(argv))
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_reproduce_refuses_a_deadline_that_is_not_a_time_of_day(capsys):
    err = reproduce_refuses(capsys, "all", "--until", "9pm", "--status")
    assert "'9pm' is not a time of day as HH:MM" in err and "Traceback" not in err


def test_reproduce_refuses_carry_over_without_a_deadline(capsys):
    err = reproduce_refuses(capsys, "all", "--carry-over", "--status")
    assert "--carry-over needs --until HH:MM" in err and "Traceback" not in err
