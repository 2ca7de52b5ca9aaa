"""A resumable campaign of dfa-run jobs: the paper's tables reproduced over as many sessions as it takes.

A *plan* is an ordered list of jobs (a table cell and a seed, with the overrides that define it).
``run_campaign`` works through it with ``jobs`` parallel ``dfa-run`` processes:

- finished records are copied into ``records`` (one folder per job: summary.json, metrics.jsonl,
  .hydra/, features.npz where the run saved one; never checkpoints); a job whose record is there is done and never rerun;
- every run trains in ``state/runs/<job>`` (outside the work tree), so a later invocation resumes
  an unfinished one from its checkpoint; on a new machine, with no state, it starts over;
- a run whose checkpoint was made under a different config (the preset changed) is set aside and
  started over; a failed job is reported and retried by the next invocation;
- SIGTERM/SIGINT stop every job at its next step with a checkpoint (dfa-run's own handling).

Order: the plan's (dfa_cli.campaign.plans: phases; by default seed 0 of every cell, then seeds 1–2, then
3–4, so that a partial campaign already gives a whole table). Within a stage, a job too long to end the stage alone
(the 100-layer net) is started early enough that the other jobs run beside it. On the CPU, once
nothing is left to start, the jobs still running take the freed slots' threads: each is paused
with a checkpoint and resumed with its share (the same run; threads change float rounding at most).

With a ``deadline`` (a machine lent for a few hours whose state may not outlive it), a job starts
only if it is expected to finish by then: its expected time is the mean wall time of the committed
records of the same cell (any seed), else the plan's estimate, times this machine's pace (its
unfinished runs' recent seconds per epoch over their cells' records'), less what a resumed run has
already spent. A run already begun resumes first; then the longest job that fits goes first, so short ones
fill the end; a later phase (seeds 3–4 too) starts when nothing of an earlier one fits. Running
jobs are never stopped at the deadline, except a carried-over one: with ``carry_over`` (a machine
whose state may outlive the session), one slot may hold a job that cannot finish by the deadline,
the longest of the plan's earliest phase with such a job, so that runs longer than any session (the
100-layer net) still progress; it is paused with a checkpoint at the deadline, and the next
invocation resumes it before starting new jobs.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml

from ..training.features import FEATURES
from ..runs.records import METRICS, SUMMARY

SEED_STAGES = ((0,), (1, 2), (3, 4))
STATE_ENV_VAR = "DFA_CAMPAIGN_DIR"
POLL_SECONDS = 2.0
DEADLINE_MARGIN = 1.1   # a job must fit the time left with this much to spare
RECORDS_REREAD_SECONDS = 60.0   # how long the records' times and the pace stand before they are read again
PACE_EPOCHS = 10        # the pace is read from this many of a run's latest epochs
STOPPED_BY_SIGNAL = (130, 143, -signal.SIGTERM)   # dfa-run's exit codes after SIGINT/SIGTERM; killed early


@dataclass
class Job:
    name: str                      # also the record's folder name
    overrides: list[str]
    seeds: tuple[int, ...]
    cost: float = 1.0              # seconds on one CPU thread, roughly: orders the jobs of a stage
    waits_for: str | None = None   # why it may not start yet (None: ready)
    record_names: list[str] = field(default_factory=list)   # one per seed
    stage: int | None = None       # the plan's phase (dfa_cli.campaign.plans); None: from the seed (SEED_STAGES)

    def __post_init__(self):
        if not self.record_names:
            self.record_names = [self.name] if len(self.seeds) == 1 else \
                [f"{self.name}_s{s}" for s in self.seeds]


def default_state_dir() -> Path:
    """``$DFA_CAMPAIGN_DIR``, else ``~/.cache/dfa-cli/campaign``: one state for every plan (job names
    are unique across them), so one invocation can run several plans and resume any of their jobs."""
    root = os.environ.get(STATE_ENV_VAR)
    return Path(root).expanduser() if root else \
        Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "dfa-cli" / "campaign"


def _without_dataset(cell: str, dataset: str | None) -> str:
    """``mnist_fc240x7_tanh_fa`` → ``fc240x7_tanh_fa`` for mnist: a cell named with its dataset is
    that dataset's cell (the every-rule table's names beside Table 1's)."""
    return cell[len(dataset) + 1:] if dataset and cell.startswith(f"{dataset}_") else cell


def _stage(job: Job) -> int:
    if job.stage is not None:
        return job.stage
    return next((i for i, st in enumerate(SEED_STAGES) if job.seeds[0] in st), len(SEED_STAGES))


# ---- running ----------------------------------------------------------------------------------
class Running(NamedTuple):
    job: Job
    proc: subprocess.Popen
    started: float                 # time.time() at its start
    threads: int | None            # None: the device's default (a GPU job)


class Campaign:
    def __init__(self, jobs: list[Job], records: Path, state: Path, parallel: int = 2,
                 threads: int | None = 1, python: str = sys.executable, out=sys.stdout,
                 widen_after: float = 30.0, deadline: float | None = None, carry_over: bool = False):
        self.jobs, self.records, self.state = jobs, Path(records), Path(state)
        self.parallel, self.threads, self.python, self.out = parallel, threads, python, out
        self.widen_after = widen_after   # seconds a job runs before it may be paused to widen it
        self.deadline = deadline         # time.time() by which every job started must be done
        self.carry_over = carry_over     # one slot may hold a job paused at the deadline, resumed later
        self.carried: set[str] = set()   # running jobs started although they cannot end by the deadline
        self.running: dict[str, Running] = {}
        self.widening: dict[str, int] = {}   # job → the threads it resumes with once paused
        self.failed: dict[str, str] = {}
        self.stopping = False
        # cell → (folder, dataset, wall seconds, epochs) of each record
        self._records_index: dict[str, list[tuple[str, str | None, float, int]]] = {}
        self._datasets: set[str] = set()     # the datasets the records name
        self._pace = 1.0
        self._records_read = float("-inf")   # when both were last read (``_reread``)

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.out, flush=True)

    def run_dir(self, job: Job) -> Path:
        return self.state / "runs" / job.name

    def done(self, job: Job) -> bool:
        return all((self.records / n / SUMMARY).is_file() for n in job.record_names)

    def _seed_dirs(self, job: Job) -> list[Path]:
        d = self.run_dir(job)
        return [d] if len(job.seeds) == 1 else [d / f"seed{s}" for s in job.seeds]

    def collect(self, job: Job) -> bool:
        """Copy each finished seed's record into ``records``; True when every seed's is there."""
        for src, name in zip(self._seed_dirs(job), job.record_names):
            dst = self.records / name
            if (dst / SUMMARY).is_file() or not (src / SUMMARY).is_file():
                continue
            tmp = dst.with_name(f".{dst.name}.partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            shutil.copytree(src / ".hydra", tmp / ".hydra")
            shutil.copy2(src / METRICS, tmp / METRICS)
            if (src / FEATURES).is_file():   # the t-SNE runs' hidden features: part of their record
                shutil.copy2(src / FEATURES, tmp / FEATURES)
            shutil.copy2(src / SUMMARY, tmp / SUMMARY)   # last: a folder with a summary is complete
            shutil.rmtree(dst, ignore_errors=True)
            tmp.rename(dst)
        return self.done(job)

    def command(self, job: Job, threads: int | None = None) -> list[str]:
        run_dir = self.run_dir(job)
        cmd = [self.python, "-m", "dfa_cli.run", *job.overrides, "hydra.mode=RUN",
               f"hydra.run.dir={run_dir}", "trainer.progress=false"]
        if len(job.seeds) == 1:
            cmd += ["seeds=null", f"seed={job.seeds[0]}"]
        else:
            cmd += [f"seeds=[{','.join(map(str, job.seeds))}]"]
        if threads or self.threads:
            cmd.append(f"trainer.threads={threads or self.threads}")
        if (run_dir / ".hydra" / "config.yaml").is_file():
            cmd.append("resume=true")
        return cmd

    def start(self, job: Job, threads: int | None = None) -> None:
        log_path = self.state / "logs" / f"{job.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        resuming = self._begun(job)
        log = open(log_path, "a")
        proc = subprocess.Popen(self.command(job, threads), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)   # Ctrl-C reaches the jobs through us only
        log.close()
        self.running[job.name] = Running(job, proc, time.time(), threads or self.threads)
        wider = f" with {threads} threads (nothing is left to start beside it)" if threads else ""
        self.say(f"{'resume' if resuming else 'start '} {job.name}{wider}")

    def _widen(self, queue: list[Job]) -> None:
        """Nothing the queue may start now (``_pick``: none left, or none that fits the deadline and
        its phase) and a slot free: each running CPU job is paused (SIGTERM writes a checkpoint)
        and, in ``_finished``, resumed with its share of all the slots' threads. Never past the
        deadline, where a paused carried job must stay paused."""
        if (queue and self._pick(queue) is not None) or self.stopping or not self.threads or not self.running \
                or self._past_deadline():
            return
        share = self.parallel * self.threads // len(self.running)
        for name, run in self.running.items():
            if (share > (run.threads or 0) and name not in self.widening
                    and time.time() - run.started >= self.widen_after and run.proc.poll() is None):
                self.widening[name] = share
                run.proc.send_signal(signal.SIGTERM)

    def _finished(self, job: Job, code: int) -> None:
        wider = self.widening.pop(job.name, None)
        if self.collect(job):
            s = json.loads((self.records / job.record_names[0] / SUMMARY).read_text())
            err = s.get("test_error", s.get("val_error"))
            self.say(f"done   {job.name}: {err}% after {s['epochs']} epochs ({s['stop_reason']}), "
                     f"{s['wall_seconds'] / 3600:.2f} h")
            return
        if code in STOPPED_BY_SIGNAL and (self.stopping or self._past_deadline()) and not wider:
            self.say(f"paused {job.name} (checkpoint written; the next invocation resumes it)")
            return
        if code in STOPPED_BY_SIGNAL and wider:
            self.start(job, wider)
            return
        tail = self._log_tail(job)
        if "different config" in tail and not self.stopping and job.name not in self.failed:
            run_dir = self.run_dir(job)
            stale = run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            run_dir.rename(stale)
            self.say(f"restart {job.name}: its checkpoint was made under a different config (kept in {stale.name})")
            self.failed[job.name] = "restarted"
            self.start(job)
            return
        self.failed[job.name] = tail.strip().splitlines()[-1] if tail.strip() else f"exit code {code}"
        self.say(f"FAILED {job.name} (exit {code}): {self.failed[job.name]}")

    def _log_tail(self, job: Job) -> str:
        path = self.state / "logs" / f"{job.name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _next(self, queue: list[Job]) -> int:
        """The queue's order (cheapest first), except for a job that would otherwise run alone at
        the end of its seed stage: one that costs at least the rest of the stage shared among the
        other slots starts as soon as a slot frees, so that the others run beside it."""
        if self.parallel < 2:
            return 0
        stage = [i for i, j in enumerate(queue) if _stage(j) == _stage(queue[0])]
        longest = max(stage, key=lambda i: queue[i].cost)
        rest = sum(queue[i].cost for i in stage if i != longest)
        return longest if queue[longest].cost >= rest / (self.parallel - 1) else 0

    def expected_seconds(self, job: Job) -> float:
        """What the job should still take: the committed records of its cell (same row and method,
        any seed) say how long a run took; without any, those of the same net and rule in another
        folder (a rerun, e.g. on another loss reduction, or the every-rule table's
        ``rules/mnist_<row>_<rule>`` beside Table 1's ``mnist/<row>_<rule>``); without those, the
        plan's estimate. Times this machine's pace; a resumed run has spent part of it already."""
        walls = [w for name in job.record_names for w, _ in self._cell_records(name, same_folder=True)] or \
            [w for name in job.record_names for w, _ in self._cell_records(name, same_folder=False)]
        total = (sum(walls) / len(walls) if walls else job.cost) * self.pace()
        spent = max((_progress(d / METRICS)[2] * 3600 for d in self._seed_dirs(job)), default=0.0)
        return max(total - spent, 0.05 * total)

    def pace(self) -> float:
        """How much slower this machine runs than the ones that made the committed records: the
        median, over the unfinished runs here whose net and rule have records, of their recent
        seconds per epoch over the records' mean (1 when nothing here says). Records from a faster
        machine would otherwise start jobs that cannot end by the deadline."""
        self._reread()
        return self._pace

    def _cell_records(self, name: str, same_folder: bool) -> list[tuple[float, int]]:
        """(wall seconds, epochs) of each committed record of ``name``'s cell, any seed: in its own
        folder, or of the same net and rule on the same dataset in any folder. The dataset is the
        first word of the name that is one (``rules/mnist_fc240x7_tanh_fa`` is mnist's
        ``fc240x7_tanh_fa``, as ``mnist-summed-step/fc240x7_tanh_fa`` is)."""
        self._reread()
        folder, _, rest = name.rpartition("/")
        cell = rest.rsplit("_s", 1)[0]
        dataset = next((w for w in re.split(r"[/_-]", name) if w in self._datasets), None)
        return [(w, e) for f, d, w, e in self._records_index.get(_without_dataset(cell, dataset), [])
                if (f == folder or not same_folder) and (d == dataset or None in (d, dataset))]

    def _reread(self) -> None:
        """The records' times and the pace, read again once they are a minute old (records land and
        runs progress as jobs go)."""
        if time.time() - self._records_read < RECORDS_REREAD_SECONDS:
            return
        self._records_index = {}
        for summary in self.records.glob(f"**/{SUMMARY}"):
            match = re.fullmatch(r"(.+)_s\d+", summary.parent.name)
            s = json.loads(summary.read_text())
            if match and s.get("wall_seconds"):
                folder = summary.parent.parent.relative_to(self.records).as_posix()
                dataset, cell = s.get("data"), _without_dataset(match[1], s.get("data"))
                self._records_index.setdefault(cell, []).append((folder, dataset, s["wall_seconds"], s.get("epochs") or 0))
        self._datasets = {d for records in self._records_index.values() for _, d, _, _ in records if d}
        self._records_read = time.time()   # before the pace: its _cell_records reads this index
        ratios = []
        for job in self.jobs:
            for seed_dir, name in zip(self._seed_dirs(job), job.record_names):
                if (self.records / name / SUMMARY).is_file():
                    continue
                here = _recent_epoch_seconds(seed_dir / METRICS, self.threads)
                there = [(w, e) for w, e in self._cell_records(name, same_folder=False) if e]
                if here and there:
                    ratios.append(here / (sum(w for w, _ in there) / sum(e for _, e in there)))
        ratios.sort()
        self._pace = ratios[len(ratios) // 2] if ratios else 1.0

    def _fits(self, job: Job) -> bool:
        return self.deadline is None or \
            time.time() + DEADLINE_MARGIN * self.expected_seconds(job) <= self.deadline

    def _pick(self, queue: list[Job]) -> int | None:
        """The index of the job to start next, or None when no job fits before the deadline."""
        if self.deadline is None:
            return self._next(queue)
        fitting = [i for i, job in enumerate(queue) if self._fits(job)]
        begun = [i for i in fitting if self._begun(queue[i])]
        if begun:                        # its work so far dies with the machine unless it ends now
            return begun[0]
        carry = self._carry_pick(queue, [i for i in range(len(queue)) if i not in fitting], fitting)
        if carry is not None:
            return carry
        if not fitting:
            return None
        first = min(_stage(queue[i]) for i in fitting)
        return max((i for i in fitting if _stage(queue[i]) == first),
                   key=lambda i: self.expected_seconds(queue[i]))

    def _carry_pick(self, queue: list[Job], too_long: list[int], fitting: list[int]) -> int | None:
        """With ``carry_over``, while no running job is carried and the deadline is ahead: a job that
        cannot end by the deadline, if its phase comes no later than every job that can; one begun
        before first, else the longest of the earliest such phase."""
        if not (self.carry_over and too_long and not self.carried and not self._past_deadline()):
            return None
        first = min(_stage(queue[i]) for i in too_long)
        if fitting and first > min(_stage(queue[i]) for i in fitting):
            return None
        begun = [i for i in too_long if self._begun(queue[i])]
        if begun:
            return begun[0]
        return max((i for i in too_long if _stage(queue[i]) == first),
                   key=lambda i: self.expected_seconds(queue[i]))

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def _pause_carried(self) -> None:
        """At the deadline, each carried-over job checkpoints and stops (SIGTERM), once."""
        for name in list(self.carried):
            run = self.running.get(name)
            if name in self.widening:    # already stopping, to resume wider: paused once it has
                continue
            if run is not None and run.proc.poll() is None:
                self.say(f"pause  {name}: the deadline; the next invocation resumes it if this machine's state is still there")
                run.proc.send_signal(signal.SIGTERM)
            self.carried.discard(name)

    def _slot_free(self) -> bool:
        """A slot is free, and on the CPU so are its threads: a job widened to the freed slots'
        threads keeps them until it ends (a later pace may make another job fit meanwhile)."""
        taken = sum(run.threads or 0 for run in self.running.values())
        return len(self.running) < self.parallel and \
            (not self.threads or taken + self.threads <= self.parallel * self.threads)

    def _begun(self, job: Job) -> bool:
        return (self.run_dir(job) / ".hydra" / "config.yaml").is_file()

    def _stop(self, signum, frame) -> None:
        self.stopping = True
        for run in self.running.values():
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Work through the plan; returns 0 when every ready job is done, 1 when something failed."""
        for job in self.jobs:
            self.collect(job)
        previous = [signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)]
        try:
            queue = [j for j in self.jobs if not self.done(j) and j.waits_for is None]
            for job in self.jobs:
                if not self.done(job) and job.waits_for:
                    self.say(f"wait   {job.name}: {job.waits_for}")
            while queue or self.running:
                while queue and self._slot_free() and not self.stopping:
                    pick = self._pick(queue)
                    if pick is None:
                        break
                    if not self._fits(queue[pick]):
                        self.carried.add(queue[pick].name)
                    self.start(queue.pop(pick))
                if not self.running and queue:   # nothing fits before the deadline
                    until = time.strftime("%H:%M", time.localtime(self.deadline))
                    self.say(f"stop   {len(queue)} jobs left; none is expected to finish by {until}")
                    break
                time.sleep(POLL_SECONDS)
                for name, run in list(self.running.items()):
                    code = run.proc.poll()
                    if code is not None:
                        del self.running[name]
                        if name not in self.widening:   # a widened job resumes, still carried
                            self.carried.discard(name)
                        self._finished(run.job, code)
                if self._past_deadline():
                    self._pause_carried()
                self._widen(queue)
                if self.stopping:
                    queue = []
        finally:
            for s, handler in zip((signal.SIGTERM, signal.SIGINT), previous):
                signal.signal(s, handler)
        return 1 if any(v != "restarted" for v in self.failed.values()) else 0

    # ---- status ---------------------------------------------------------------------------------
    def status(self) -> list[dict]:
        """One row per job: state, epochs so far, last error, hours spent."""
        rows = []
        for job in self.jobs:
            for seed_dir, name in zip(self._seed_dirs(job), job.record_names):
                done = self.records / name / SUMMARY
                if done.is_file():
                    s = json.loads(done.read_text())
                    rows.append({"job": name, "state": "done", "epochs": s.get("epochs"),
                                 "error": s.get("test_error", s.get("val_error")),
                                 "stop": s.get("stop_reason"), "hours": (s.get("wall_seconds") or 0) / 3600})
                    continue
                epochs, error, hours = _progress(seed_dir / METRICS)
                state = "waiting" if job.waits_for else ("started" if epochs else "pending")
                rows.append({"job": name, "state": state, "epochs": epochs, "error": error,
                             "stop": job.waits_for if job.waits_for else None, "hours": hours})
        return rows


def _metric_rows(metrics: Path) -> list[dict]:
    """An unfinished run's epochs, up to a line cut off mid-write."""
    rows = []
    for line in (metrics.read_text().splitlines() if metrics.is_file() else []):
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def _progress(metrics: Path) -> tuple[int, float | None, float]:
    """Epochs logged so far, the last evaluation error and the hours spent, of an unfinished run."""
    rows = _metric_rows(metrics)
    if not rows:
        return 0, None, 0.0
    last = rows[-1]
    return len(rows), last.get("test_error", last.get("val_error")), (last.get("elapsed") or 0) / 3600


def _recent_epoch_seconds(metrics: Path, threads: int | None) -> float | None:
    """The median seconds per epoch over an unfinished run's latest epochs on ``threads`` threads
    (a widened run's are faster than its slot's), or None before any."""
    seconds = [row.get("seconds") for row in _metric_rows(metrics)
               if threads is None or row.get("threads", threads) == threads]
    recent = sorted(x for x in seconds[-PACE_EPOCHS:] if x)
    return recent[len(recent) // 2] if recent else None


def preset_sets(preset: Path, dotted: str) -> bool:
    """Whether the preset file itself sets ``dotted`` (e.g. ``trainer.lr_schedule``)."""
    node = yaml.safe_load(preset.read_text()) or {}
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
