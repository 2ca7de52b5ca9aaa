"""The training loop: the paper's protocol, fast on any device.

- The data set lives on the training device; each epoch every replica draws its own order
  (a CPU generator seeded from its seed, so the order is the same on every device) and batches
  are gathered on the device.
- No host synchronisation inside an epoch: loss and error counts accumulate in a device tensor
  that is read once per epoch.
- On CUDA the steady-state step (gather, forward, rule, optimizer update, statistics) is captured
  once in a CUDA graph and replayed (:mod:`dfa_cli.training.graph`); the last partial batch and evaluation
  run eagerly. The captured step is the eager step, so the math is the same; it is captured again
  whenever the LR changes, a stacked seed stops or a checkpoint is loaded.
- Stacked replicas stop independently (converged, diverged, max_epochs); a stopped replica is
  written out and sliced away, so the rest keep training without it.
- After each epoch's records a checkpoint is written (:mod:`dfa_cli.runs.checkpoint`); SIGTERM/SIGINT
  stop the run after the current step with a mid-epoch checkpoint (:mod:`dfa_cli.runs.signals`).
  ``fit(resume=state)`` continues from either exactly, so the records equal an uninterrupted run's.
- Optional, off by default and then free: FGSM adversarial training inside the step, alignment
  angles measured eagerly before every N-th step, a clean pass over the training set after each
  epoch, hidden features saved when a replica finishes (dfa_cli.training.adversarial, .diagnostics, .features).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..runs import checkpoint as ckpt
from ..data.datasets import Dataset
from .fast import FastFCStep
from .graph import CapturedStep
from .losses import batch_scale, per_replica_loss
from .optim import keep_replicas, match_capturable
from ..runs.progress import Progress
from ..runs.records import RunRecord
from .schedule import LRSchedule
from ..runs.signals import StopFlag, stop_on_signals

ORDER_SEED_OFFSET = 1_000_003   # data order draws from a stream apart from initialisation
EMA_START = 100.0               # Main.lua starts the EMA of the training error at 1 (100 %)


@dataclass
class Replica:
    """Host-side bookkeeping of one seed."""
    seed: int
    record: RunRecord
    order_gen: torch.Generator
    ema: float = EMA_START
    halvings: int = 0          # LR halvings made by the schedule
    best_eval_error: float = math.inf
    best_epoch: int = 0
    seconds: list = field(default_factory=list)


def per_example(sums: torch.Tensor, n: int) -> torch.Tensor:
    """``(R, 2)`` sums of loss and of wrong answers → mean loss and error in percent (100·wrong/n,
    multiplied first, so 486 of 10000 prints as 4.86)."""
    return torch.stack([sums[:, 0] / n, sums[:, 1] * 100 / n], dim=1)


def _finite(*values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


class Trainer:
    """Train a (possibly stacked) model with the paper's protocol and write one record per seed."""

    def __init__(self, model, optimizer, data: Dataset, records: list[RunRecord], seeds: list[int], *,
                 loss: str = "bce", reduction: str = "mean", batch_size: int = 64, max_epochs: int = 300,
                 stop_train_error: float = 0.01, ema_decay: float = 0.75, eval_batch_size: int = 10000,
                 cuda_graph: bool = False, describe: dict | None = None, progress="auto",
                 checkpoint=None, checkpoint_every: int = 1, meta: dict | None = None,
                 adversarial=None, alignment=None, features=None, eval_train: bool = False,
                 schedule: LRSchedule | None = None, eval_split: str = "test", fast_step: bool = False):
        self.model, self.optimizer, self.data, self.loss = model, optimizer, data, loss
        self.reduction = reduction   # sum: the author's step, a partial batch steps short (dfa_cli.training.losses)
        self.batch_size, self.max_epochs, self.eval_batch_size = batch_size, max_epochs, eval_batch_size
        self.stop_train_error, self.ema_decay = stop_train_error, ema_decay
        self.schedule = schedule or LRSchedule()
        self.initial_lr = float(optimizer.param_groups[0]["lr"])
        # "test", or "val" when the evaluation set is the validation split: the records say which
        self.eval_key = "val" if eval_split == "validation" else "test"
        # the hand-written step of dfa_cli.training.fast (CPU, fully connected nets), else autograd
        self.fast = FastFCStep(model, loss, reduction) if fast_step else None
        self.describe, self.progress = dict(describe or {}), progress
        self.device = data.x_train.device
        self.use_graph = cuda_graph and self.device.type == "cuda"
        self.stacked = len(seeds)
        self.active = [Replica(s, rec, torch.Generator().manual_seed(s + ORDER_SEED_OFFSET))
                       for s, rec in zip(seeds, records)]
        self.acc = torch.zeros(len(seeds), 2, device=self.device)  # per replica: Σ loss, Σ wrong
        self.captured = CapturedStep(self._train_step, lambda: self.optimizer.zero_grad(set_to_none=True))
        # checkpoint: its path (None: none written); meta: saved with it (the config, …)
        self.checkpoint, self.meta = (Path(checkpoint) if checkpoint else None), dict(meta or {})
        self.checkpoint_every = checkpoint_every   # epochs between checkpoints (0: on signals only)
        self.finished: dict[int, dict] = {}  # seed → summary of the replicas that have stopped
        self.stop = StopFlag()                # raised by a signal while fit() runs
        # Issue 6, all off (None/False) by default and then free: FGSM on every training batch
        # (dfa_cli.training.adversarial), alignment angles every N steps (dfa_cli.training.diagnostics), hidden features
        # at the end (dfa_cli.training.features), a clean pass over the training set after each epoch.
        self.adversarial, self.alignment, self.features = adversarial, alignment, features
        self.eval_train, self.extra = eval_train, {}

    # ---- one step -----------------------------------------------------------------------------
    def _train_step(self, idx: torch.Tensor) -> None:
        """One update of every replica on its batch ``idx`` (``(R, B)`` indices into the train set)."""
        x, y = self.data.x_train[idx], self.data.y_train[idx]
        if self.adversarial is not None:  # FGSM by true BP; the step then sees the perturbed batch only
            x = self.adversarial(self.model, x, y, self.fast.input_gradient if self.fast is not None else None)
        if self.fast is not None:
            losses, wrong = self.fast(x, y)
        else:
            logits = self.model(x, targets=y)     # (DRTP's hidden signals are made of y)
            losses = per_replica_loss(logits, y, self.loss)
            self.optimizer.zero_grad(set_to_none=True)
            (losses.sum() * batch_scale(idx.shape[1], self.reduction)).backward()
            wrong = (logits.argmax(-1) != y).sum(-1)
        self.optimizer.step()
        with torch.no_grad():
            self.acc += torch.stack([losses.detach() * idx.shape[1], wrong.to(self.acc.dtype)], dim=1)

    def _step(self, idx: torch.Tensor) -> None:
        if self.alignment is not None:  # eager, before the update, never inside the CUDA graph
            self.alignment.on_step(self.model, self.data, idx)
        if not self.use_graph:
            return self._train_step(idx)
        self.captured(idx, self.device)

    @property
    def graph(self):
        """The captured step's CUDA graph (None before the capture, and on the CPU)."""
        return self.captured.graph

    # ---- one epoch ----------------------------------------------------------------------------
    def _epoch_order(self) -> torch.Tensor:
        n = len(self.data.x_train)
        order = torch.stack([torch.randperm(n, generator=r.order_gen) for r in self.active])
        return order.to(self.device, non_blocking=True)

    def _train_epoch(self, epoch: int, first_step: int = 0, timing=(0.0, 0.0)) -> torch.Tensor:
        """Online training pass (dropout active, as the paper measures it) → ``(R, 2)`` on the host.

        ``first_step`` > 0 continues an epoch from a mid-epoch checkpoint (``acc`` already holds
        its statistics so far). After every step a pending signal stops the run (see ``_interrupt``).
        """
        self.model.train()
        drawn_from = [r.order_gen.get_state() for r in self.active]  # redraws this order on resume
        order, b = self._epoch_order(), self.batch_size
        if first_step == 0:
            self.acc.zero_()
        n_full = order.shape[1] // b
        for s in range(first_step, n_full):
            self._step(order[:, s * b:(s + 1) * b])
            if self.stop.signum is not None:
                self._interrupt(epoch, s + 1, drawn_from, timing)
        if order.shape[1] % b and first_step <= n_full:
            self._train_step(order[:, n_full * b:])
            if self.stop.signum is not None:
                self._interrupt(epoch, n_full + 1, drawn_from, timing)
        return per_example(self.acc.double().cpu(), len(self.data.x_train))  # the epoch's one sync

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss and error % per replica on ``(x, y)`` (dropout off) → ``(R, 2)`` on the host."""
        self.model.eval()
        acc = torch.zeros(len(self.active), 2, device=self.device, dtype=torch.float64)
        chunk = max(256, self.eval_batch_size // max(1, len(self.active)))   # activations grow with R
        for s in range(0, len(x), chunk):
            xb, yb = x[s:s + chunk], y[s:s + chunk]
            logits = self.model(xb)
            targets = yb.expand(logits.shape[0], -1)
            losses = per_replica_loss(logits, targets, self.loss) * len(xb)
            wrong = (logits.argmax(-1) != targets).sum(-1)
            acc += torch.stack([losses.double(), wrong.double()], dim=1)
        self.model.train()
        return per_example(acc.cpu(), len(x))

    # ---- the run ------------------------------------------------------------------------------
    def fit(self, resume: dict | None = None) -> list[dict]:
        """Train until every replica has stopped; returns one summary per seed, in seed order.

        ``resume``: a checkpoint's state (:func:`dfa_cli.runs.checkpoint.load`) to continue from.
        """
        seeds = [r.seed for r in self.active]
        torch.manual_seed(seeds[0])  # dropout masks come from the device's generator
        first_epoch, first_step, elapsed, epoch_seconds = 1, 0, 0.0, 0.0
        if resume is not None:
            first_epoch, first_step, elapsed, epoch_seconds = self._restore(resume)
        start = time.perf_counter() - elapsed
        title = f"{self.describe.get('method', '')} {self.describe.get('model', '')}".strip()
        with Progress(self.max_epochs, title or "training", self.progress) as progress, \
                stop_on_signals() as self.stop:
            for epoch in range(first_epoch, self.max_epochs + 1):
                if not self.active:
                    break
                t0 = time.perf_counter() - epoch_seconds
                train = self._train_epoch(epoch, first_step, (start, t0))
                first_step, epoch_seconds = 0, 0.0
                test = self.evaluate(self.data.x_test, self.data.y_test)
                self.extra = self._epoch_extra()
                seconds = time.perf_counter() - t0
                rows, done = [], []
                for j, rep in enumerate(self.active):
                    row = self._epoch_row(rep, epoch, train[j], test[j], seconds,
                                          time.perf_counter() - start)
                    rep.record.log_epoch(row)
                    rows.append(row)
                    reason = self._stop_reason(rep, row) or ("max_epochs" if epoch == self.max_epochs else None)
                    if reason:
                        self.finished[rep.seed] = self._finish(rep, row, reason, time.perf_counter() - start)
                        done.append(j)
                progress.update(epoch, rows, len(self.active))
                if done:
                    self._drop(done)
                self._apply_schedule()
                due = self.checkpoint_every and epoch % self.checkpoint_every == 0
                if self.active and due:  # after the records, so that records and checkpoint agree
                    self._save(epoch + 1, 0, [r.order_gen.get_state() for r in self.active],
                               time.perf_counter() - start, 0.0)
                if self.stop.signum is not None and self.active:  # (a finished run just ends)
                    self.stop.hand_on(epoch, None, self.checkpoint)
        if self.checkpoint is not None:
            self.checkpoint.unlink(missing_ok=True)  # every seed has its summary: nothing to resume
        return [self.finished[s] for s in seeds]

    # ---- checkpoints --------------------------------------------------------------------------
    def _save(self, epoch: int, step: int, order_states: list, elapsed: float, epoch_seconds: float) -> None:
        """Checkpoint the state before step ``step`` of epoch ``epoch`` (``order_states``: the order
        generators' states from which that epoch's order is drawn)."""
        if self.checkpoint is None:
            return
        cuda = self.device.type == "cuda" and torch.cuda.is_initialized()
        state = {
            "format": ckpt.FORMAT, **self.meta, "epoch": epoch, "step": step,
            "elapsed": elapsed, "epoch_seconds": epoch_seconds,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "acc": self.acc.cpu(),
            "replicas": [{"seed": r.seed, "ema": r.ema, "best_test_error": r.best_eval_error,
                          "best_epoch": r.best_epoch, "halvings": r.halvings, "seconds": list(r.seconds), "order_state": g}
                         for r, g in zip(self.active, order_states)],
            "finished": ckpt.plain(self.finished),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if cuda else None,   # this run's GPU's only
        }
        ckpt.save(self.checkpoint, state)

    def _interrupt(self, epoch: int, step: int, order_states: list, timing) -> None:
        """A signal arrived: checkpoint the state after this step, then hand the signal on."""
        start, t0 = timing
        now = time.perf_counter()
        self._save(epoch, step, order_states, now - start, now - t0)
        self.stop.hand_on(epoch, step, self.checkpoint)

    def _restore(self, state: dict) -> tuple[int, int, float, float]:
        """Load a checkpoint's state; returns (epoch, step, elapsed, epoch seconds) to continue from."""
        self.finished = dict(state["finished"])
        saved = {r["seed"]: r for r in state["replicas"]}
        keep = [j for j, rep in enumerate(self.active) if rep.seed in saved]
        if len(keep) < len(self.active):
            self._drop([j for j in range(len(self.active)) if j not in keep])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        match_capturable(self.optimizer, self.use_graph)   # it may have been saved on another device
        for rep in self.active:
            r = saved[rep.seed]
            rep.ema, rep.best_eval_error, rep.best_epoch = r["ema"], r["best_test_error"], r["best_epoch"]
            rep.halvings = r.get("halvings", 0)
            rep.seconds = list(r["seconds"])
            rep.order_gen.set_state(r["order_state"])
        self.acc.copy_(state["acc"])
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt.cuda_rng_state(state, self.device), self.device)
        self.captured.reset()  # (re)capture after loading
        return state["epoch"], state["step"], state["elapsed"], state["epoch_seconds"]

    def _epoch_row(self, rep: Replica, epoch: int, train, test, seconds: float, elapsed: float) -> dict:
        (train_loss, train_error), (test_loss, test_error) = train.tolist(), test.tolist()
        if _finite(train_error):
            rep.ema = self.ema_decay * rep.ema + (1 - self.ema_decay) * train_error
        if _finite(test_loss) and test_error < rep.best_eval_error:
            rep.best_eval_error, rep.best_epoch = test_error, epoch
        rep.seconds.append(seconds)
        k = self.eval_key
        return {"epoch": epoch, "train_loss": train_loss, "train_error": train_error,
                "train_error_ema": rep.ema, f"{k}_loss": test_loss, f"{k}_error": test_error,
                "lr": float(self.optimizer.param_groups[0]["lr"]), "seconds": seconds, "elapsed": elapsed,
                "threads": torch.get_num_threads(),  # a resumed run may continue on more threads
                **self.extra.get(rep.seed, {})}

    def _epoch_extra(self) -> dict:
        """Per seed, this epoch's clean training-set pass and alignment angles (when switched on)."""
        extra = {rep.seed: {} for rep in self.active}
        if self.eval_train:  # dropout off, every training example: not the paper's online measure
            clean = self.evaluate(self.data.x_train, self.data.y_train)
            for rep, (loss, error) in zip(self.active, clean.tolist()):
                extra[rep.seed].update(train_loss_eval=loss, train_error_eval=error)
        if self.alignment is not None:
            for rep, angles in zip(self.active, self.alignment.collect(len(self.active))):
                extra[rep.seed]["alignment"] = angles
        return extra

    def _stop_reason(self, rep: Replica, row: dict) -> str | None:
        """Divergence, the early stop on the EMA, then the LR schedule (which may halve the LR)."""
        if not _finite(row["train_loss"], row[f"{self.eval_key}_loss"]):
            return "diverged"
        if row["train_error_ema"] <= self.stop_train_error:
            return "converged"
        rep.halvings, ends = self.schedule.after_epoch(row["epoch"], row["train_error"], rep.ema, rep.halvings)
        return "lr_halvings" if ends else None

    def _apply_schedule(self) -> None:
        """The optimizer's LR from the schedule's halvings (equal across stacked seeds: ``auto``,
        whose halvings differ by seed, is refused for stacked seeds by the config check)."""
        if self.active:
            lr = self.schedule.lr(self.initial_lr, self.active[0].halvings)
            if any(group["lr"] != lr for group in self.optimizer.param_groups):
                self.captured.reset()   # a float LR is a kernel argument, fixed at capture
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def _finish(self, rep: Replica, row: dict, reason: str, wall: float) -> dict:
        k = self.eval_key
        summary = {**self.describe, "seed": rep.seed,
                   f"{k}_error": row[f"{k}_error"], "train_error": row["train_error"],
                   f"{k}_loss": row[f"{k}_loss"], "train_loss": row["train_loss"],
                   f"best_{k}_error": rep.best_eval_error if rep.best_epoch else None,
                   "best_epoch": rep.best_epoch or None, "epochs": row["epoch"], "stop_reason": reason,
                   "train_error_ema": rep.ema, "lr_halvings": rep.halvings, "final_lr": row["lr"],
                   "wall_seconds": wall,
                   "seconds_per_epoch": sum(rep.seconds) / len(rep.seconds),
                   "stacked_seeds": self.stacked,
                   **{k: row[k] for k in ("train_error_eval", "train_loss_eval") if k in row},
                   "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if self.features is not None:  # this replica's final network, before it is sliced away
            j = next(j for j, r in enumerate(self.active) if r is rep)
            summary["features"] = self.features(self.model, self.data, j, rep.record.directory).name
        rep.record.write_summary(summary)
        return summary

    def _drop(self, done: list[int]) -> None:
        """Slice finished replicas out of model, optimizer and statistics."""
        keep = [j for j in range(len(self.active)) if j not in done]
        self.active = [self.active[j] for j in keep]
        if not keep:
            return
        index = torch.tensor(keep, device=self.device)
        keep_replicas(self.optimizer, index)
        self.model.keep_replicas(index)
        self.acc = torch.zeros(len(keep), 2, device=self.device)
        self.captured.reset()
