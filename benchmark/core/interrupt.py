"""Stopping cleanly on SIGTERM (``kill``, SLURM before it kills a job at its time limit) and SIGINT
(Ctrl-C): the run in training finishes its step, writes its checkpoint and the command exits 143 /
130 (128 + the signal) with ``interrupted at step N; run the same command again to resume``.

Two pieces: :func:`stop_on_signals` (the command, around everything it does) turns a signal into
:class:`Interrupted` at once, which is safe wherever the run's files are written atomically;
:func:`deferred_stop` (the training loop) only records it, and the loop stops after its step, with
a checkpoint at that step. A second signal while one is pending stops at once (the last checkpoint
stays valid). Handlers are installed only over the default ones and only in the main thread: a
handler someone else set (submitit's, which ignores SIGTERM so that its own pre-emption signal
checkpoints and requeues the job) is left alone."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DEFAULTS = (signal.SIG_DFL, signal.default_int_handler)


class Interrupted(BaseException):
    """A signal stopped the command. A BaseException, as KeyboardInterrupt is: the runner's
    ``except Exception`` around one run must not record it as that run's failure."""

    def __init__(self, signum: int, step: int | None = None, where: str = ""):
        super().__init__(signum, step, where)  # picklable: it comes back from worker processes
        self.signum, self.step, self.where = signum, step, where

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal ended

    def __str__(self) -> str:
        at = f"at step {self.step}" if self.step is not None else f"by {signal.Signals(self.signum).name}"
        return f"interrupted {at}; run the same command again to resume" + (f" ({self.where})" if self.where else "")


class _Pending:
    deferring = False
    signum: int | None = None


_PENDING = _Pending()


def _handle(signum, frame) -> None:
    if _PENDING.deferring and _PENDING.signum is None:
        _PENDING.signum = signum  # the training loop stops after its step
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within: SIGTERM and SIGINT raise :class:`Interrupted` (or are deferred, see
    :func:`deferred_stop`) where their handlers are the defaults; the previous handlers after."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            if signal.getsignal(sig) in _DEFAULTS:
                previous[sig] = signal.signal(sig, _handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopRequest:
    """What the training loop asks after each step: whether a signal asked it to stop."""

    @property
    def signum(self) -> int | None:
        return _PENDING.signum

    def __bool__(self) -> bool:
        return _PENDING.signum is not None


@contextlib.contextmanager
def deferred_stop(enabled: bool = True) -> Iterator[StopRequest]:
    """Within: a signal is recorded in the :class:`StopRequest` given, not raised (``enabled``
    off: left as it is; under torchrun the ranks could see it at different steps)."""
    if not enabled:
        yield StopRequest()
        return
    with stop_on_signals():
        outer = _PENDING.deferring
        _PENDING.deferring = True
        try:
            yield StopRequest()
        finally:
            _PENDING.deferring = outer
            signum = _PENDING.signum
            if not outer:
                _PENDING.signum = None
        if signum is not None and not outer:  # came after the loop's last look: stop here
            raise Interrupted(signum)
