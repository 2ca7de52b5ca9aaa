"""Stop gracefully on SIGTERM / SIGINT (and submitit's preemption signal) while training.

While training, these signals only raise a flag; the training loop looks at it after every step
(a Python attribute: no device synchronisation), writes a checkpoint of the state at the end of
that step, then hands the signal on: to the handler that was there before when that is a Python
function (submitit's: it requeues the job and exits), else by raising :class:`Interrupted`, which
``dfa-run`` reports in one line, exiting with 128 + the signal number (130 for SIGINT, 143 for
SIGTERM). A second Ctrl-C stops at once, without a checkpoint. Signals that were ignored before
training (``nohup``, background jobs) stay ignored; the previous handlers are restored afterwards.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, signum: int, epoch: int, step: int | None, checkpoint=None):
        self.signum, self.epoch, self.step, self.checkpoint = signum, epoch, step, checkpoint
        self.exit_code = 128 + signum
        where = f"epoch {epoch} after step {step}" if step else f"the end of epoch {epoch}"
        saved = f"; checkpoint written to {checkpoint}" if checkpoint else ""
        super().__init__(f"interrupted by {signal.Signals(signum).name} at {where}{saved}")


def _watched() -> list[int]:
    """SIGINT, SIGTERM and, inside a submitit job, its preemption/timeout signal (USR2 by default)."""
    sigs = [signal.SIGINT, signal.SIGTERM]
    if os.environ.get("SUBMITIT_EXECUTOR"):
        usr = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
        if usr is not None:
            sigs.append(usr)
    return sigs


class StopFlag:
    """Set by a watched signal; the training loop polls :attr:`signum` after each step."""

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.signum = signum

    def hand_on(self, epoch: int, step: int | None, checkpoint=None) -> None:
        """After the checkpoint: let the previous owner act on the signal, or raise :class:`Interrupted`.

        Returns (and training goes on) only when a previous Python handler chose to ignore it.
        """
        signum, self.signum = self.signum, None
        previous = self.previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, None)
            return
        raise Interrupted(signum, epoch, step, checkpoint)


@contextmanager
def stop_on_signals():
    """Watch the signals for the duration of the block (main thread only; elsewhere a dummy flag)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    for signum in _watched():
        previous = signal.getsignal(signum)
        if previous in (signal.SIG_IGN, None):
            continue
        flag.previous[signum] = previous
        signal.signal(signum, flag._handler)
    try:
        yield flag
    finally:
        for signum, previous in flag.previous.items():
            signal.signal(signum, previous)
