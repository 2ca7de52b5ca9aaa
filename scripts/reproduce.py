"""Reproduce Nøkland (2016), Tables 1 and 2, resumably: one command starts the campaign and the same
command resumes it.

    python scripts/reproduce.py all                      # both tables and the figures' runs, in phases
    python scripts/reproduce.py table2 --seeds 0         # one table, one seed
    python scripts/reproduce.py all --status             # what is done, running, waiting; hours spent
    python scripts/reproduce.py cifar10-dropout-search --summary   # a validation search and its choice
    python scripts/reproduce.py all --until 08:55        # start only what should finish by 08:55
    python scripts/reproduce.py all --until 08:55 --carry-over   # and one longer job, paused at 08:55

On a CPU it runs ``--jobs`` (2) single-thread ``dfa-run`` processes side by side (two 1-thread jobs
finish more epochs per hour than one 2-thread job); on a GPU, one job per cell and seed stage with
the stage's seeds stacked. Run one invocation at a time: it is what keeps the cores at two jobs.
Finished records land in ``results/paper/<data>/<row>_<method>_s<seed>/`` (``dfa-report
results/paper`` makes the tables); working state (checkpoints, unfinished runs, logs) lives in
``--state`` (default ``$DFA_CAMPAIGN_DIR``, else ``~/.cache/dfa-cli/campaign``), outside the work
tree. Stop it with Ctrl-C or SIGTERM: every job checkpoints; rerun to resume. The order (phases)
is in dfa_cli/campaign/plans.py. A dropout row's jobs wait until its preset names the schedule that its
validation search chose (the paper: "learning rate with decay and training time chosen based on a
validation set"); ``--summary`` prints that choice. ``--until`` is for a machine lent for a few
hours whose state dies with it: a job starts only if the records of its cell (or the plan's
estimate), scaled by this machine's pace (its unfinished runs' seconds per epoch over the records'),
says it ends in time, longest first, so that short jobs fill the end. ``--carry-over`` is for
a machine whose state may outlive the session: one slot may also hold a job that cannot end in time
(the 100-layer net's 3.5 h); it is paused with a checkpoint at the deadline and the next invocation
resumes it first. On a new machine it starts over, and only the time it ran is lost.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dfa_cli.campaign.runner import Campaign, default_state_dir  # noqa: E402
from dfa_cli.campaign.plans import PLANS, campaign_jobs  # noqa: E402
from dfa_cli.campaign.searches import SEARCHES  # noqa: E402

RECORDS = REPO / "results" / "paper"
CHOICES = ("all", *PLANS, "figures", "experiments", "summed-step", "rules", *SEARCHES)


def _deadline(text: str) -> float:
    """``HH:MM`` → the next such moment as time.time(); the error is argparse's one sentence."""
    try:
        at = dt.datetime.combine(dt.date.today(), dt.time.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time of day as HH:MM (e.g. 08:55)") from None
    if at <= dt.datetime.now():
        at += dt.timedelta(days=1)
    return at.timestamp()


def status_by_folder(campaign: Campaign, jobs: list, rows: list[dict]) -> str:
    """One line per records folder (``rules``, ``cifar10``, …): records done of planned, and the
    machine hours still to go, in the order the plans list them."""
    folders: dict[str, list] = {}   # folder → [done, planned, hours to go]
    for row in rows:
        tally = folders.setdefault(row["job"].split("/")[0], [0, 0, 0.0])
        tally[0] += row["state"] == "done"
        tally[1] += 1
    for job in jobs:
        if not campaign.done(job):
            folders[job.record_names[0].split("/")[0]][2] += campaign.expected_seconds(job) / 3600
    return "by folder: " + "; ".join(f"{name} {done}/{planned} ({hours:.1f} h to go)"
                                     for name, (done, planned, hours) in folders.items())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("plans", nargs="+", choices=CHOICES, metavar="plan",
                   help=f"one or more of: {', '.join(CHOICES)} (all = table1 table2 figures experiments summed-step rules)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2; the tables' "
                   "seeds 3–4 are not part of the rerun on the author's summed step)")
    p.add_argument("--jobs", type=int, default=None, help="parallel jobs (CPU default 2, GPU 1)")
    p.add_argument("--threads", type=int, default=1, help="threads per job on the CPU (default 1)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--records", type=Path, default=RECORDS, help="where finished records land")
    p.add_argument("--state", type=Path, default=None, help="checkpoints, unfinished runs and logs")
    p.add_argument("--until", type=_deadline, default=None, metavar="HH:MM",
                   help="start only jobs expected to finish by then (local time, today or tomorrow)")
    p.add_argument("--carry-over", action="store_true",
                   help="with --until: one slot may also run a job that cannot end by then, paused at the "
                        "deadline with a checkpoint and resumed first next time (if this machine's state survives)")
    p.add_argument("--status", action="store_true", help="show the campaign's state and exit")
    p.add_argument("--summary", action="store_true", help="searches: the candidates' validation errors and the choice")
    args = p.parse_args(argv)
    if args.carry_over and args.until is None:
        p.error("--carry-over needs --until HH:MM: without a deadline every job already runs to its end")
    everything = ("table1", "table2", "figures", "experiments", "summed-step", "rules")
    plans = [q for plan in args.plans for q in (everything if plan == "all" else (plan,))]
    if args.summary:
        searches = [name for name in plans if name in SEARCHES] or [
            name for name, s in SEARCHES.items() if s.table in plans]
        out = {}
        for name in searches:
            rows = SEARCHES[name].summary(args.records)
            out[name] = {"candidates": rows, "choice": SEARCHES[name].choice(rows)}
        print(json.dumps(out, indent=1))
        return
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    import torch
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    jobs = campaign_jobs(plans, seeds, stacked=cuda)
    for job in jobs:
        job.overrides = job.overrides + ["device=cuda" if cuda else "device=cpu"]
    state = args.state or default_state_dir()
    campaign = Campaign(jobs, args.records, state, parallel=args.jobs or (1 if cuda else 2),
                        threads=None if cuda else args.threads, deadline=args.until, carry_over=args.carry_over)
    if args.status:
        rows = campaign.status()
        for r in rows:
            err = "" if r["error"] is None else f"{r['error']:.2f}%"
            print(f"{r['state']:8} {r['job']:62} {r['epochs'] or 0:>4} ep {err:>8} {r['hours']:6.2f} h  {r['stop'] or ''}")
        done = sum(r["state"] == "done" for r in rows)
        left = sum(campaign.expected_seconds(job) for job in jobs if not campaign.done(job)) / 3600
        print(status_by_folder(campaign, jobs, rows))
        print(f"{done}/{len(rows)} records done; {sum(r['hours'] for r in rows):.1f} machine hours so far, "
              f"roughly {left:.0f} to go (the records' times, else the plan's estimates, at this machine's "
              f"pace ×{campaign.pace():.2f}); state in {state}")
        return
    print(f"campaign {' '.join(args.plans)}: {len(jobs)} jobs, {campaign.parallel} at a time, "
          f"records in {args.records}, state in {state}", flush=True)
    sys.exit(campaign.run())


if __name__ == "__main__":
    main()
