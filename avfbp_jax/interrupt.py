"""Ctrl-C (SIGINT) and SIGTERM: a command stops cleanly, says so in one line and exits with
128 + the signal number (130, 143), with no traceback and nothing half-written.

Handlers are installed only while they are needed; the previous ones come back afterwards.

* `raise_on_signals()` (every `avfbp` command, through `run_command` in cli.main): a signal
  raises `Interrupted` in the main thread, so the cleanups of atomic writes (`except
  BaseException`) and of process pools run on the way out; run_command prints its message and
  returns its exit status.
* `StepStop` (the training loop): a signal only asks to stop; the loop stops at a step boundary
  that every process agrees on (`reached(step)`), saves that step, then raises `Interrupted`.
* While a process is stopping, another signal exits at once: one line, no cleanup.

Workers of `process_pool` ignore SIGINT: Ctrl-C in a terminal reaches the whole process group,
and only the parent decides what happens (it terminates the pool on its way out).
"""

import contextlib
import multiprocessing
import multiprocessing.pool
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_stopping = False  # set once this process has begun to stop; a further signal exits at once


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM; `message` is the one line to show the user."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = int(signum)
        self.message = message or f"interrupted by {signal.Signals(self.signum).name}"
        super().__init__(self.message)

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by this signal: 130 SIGINT, 143 SIGTERM."""
        return 128 + self.signum

    def with_message(self, message: str) -> "Interrupted":
        """The same interruption, told with a message from a layer that knows more."""
        return Interrupted(self.signum, message)


def exit_now(signum: int) -> None:
    """Ends the process at once (a signal while already stopping): one line, no cleanup."""
    name = signal.Signals(signum).name
    os.write(2, f"\navfbp: {name} while stopping: stopped at once\n".encode())
    os._exit(128 + signum)


@contextlib.contextmanager
def handling(handler: Callable, signals: tuple[int, ...] = SIGNALS) -> Iterator[None]:
    """Installs handler(signum, frame) for `signals` while active, then restores the previous
    handlers. Does nothing outside the main thread (Python runs handlers only there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():  # None: a handler installed outside Python
            signal.signal(s, signal.SIG_DFL if old is None else old)


@contextlib.contextmanager
def raise_on_signals() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise Interrupted in the main thread."""
    global _stopping
    _stopping = False

    def handler(signum, frame):
        global _stopping
        if _stopping:
            exit_now(signum)
        _stopping = True
        raise Interrupted(signum)

    with handling(handler):
        yield


def run_command(prog: str, run: Callable[[], int]) -> int:
    """run() under raise_on_signals(); an interruption prints `prog: message` (one line on
    stderr) and gives its exit status (130 / 143)."""
    with raise_on_signals():
        try:
            return run()
        except Interrupted as e:
            newline = "\n" if sys.stderr.isatty() else ""  # after a progress bar or ^C
            print(f"{newline}{prog}: {e.message}", file=sys.stderr, flush=True)
            return e.exit_status


class StepStop:
    """Stops a loop at a step boundary on SIGINT or SIGTERM, at the same step on every process.

    One process: the first signal makes reached() true. Several processes (jax.distributed
    initialised): JAX's preemption service decides. Its SIGTERM handler, installed by
    jax.distributed.initialize, tells every process, and reached(step) is true on all of them at
    the same step, the fastest process's next one; SIGINT is passed on as SIGTERM to this process
    so that Ctrl-C takes the same path. Use as a context manager around the loop.
    """

    def __init__(self):
        import jax

        self.signum: int | None = None
        self.sync = (jax.distributed.is_initialized()
                     and bool(jax.config.jax_enable_preemption_service))
        # The preemption service stops at step max(last step seen by each process) + 1, and
        # "seen" starts at 0 on every process, so every step id from 1 on must be shown to it.
        self._next_sync_step = 1
        self._handling = handling(self._handle, (signal.SIGINT,) if self.sync else SIGNALS)

    def __enter__(self) -> "StepStop":
        global _stopping
        _stopping = False
        self._handling.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._handling.__exit__(*exc)

    def _handle(self, signum: int, frame) -> None:
        if _stopping or self.signum is not None:
            exit_now(signum)
        self.signum = signum
        if self.sync:  # JAX's preemption notifier tells the other processes
            os.kill(os.getpid(), signal.SIGTERM)

    def reached(self, step: int) -> bool:
        """True when the loop should stop after `step` (call it after every step, in order)."""
        if not self.sync:
            return self.signum is not None
        from jax.experimental import multihost_utils

        hit = False
        for k in range(self._next_sync_step, step + 1):
            hit = multihost_utils.reached_preemption_sync_point(k) or hit
        self._next_sync_step = step + 1
        return hit

    def requested(self) -> bool:
        """A signal came that reached() did not act on (one process; with several, only
        reached() may stop the run, since all processes must stop together)."""
        return self.signum is not None and not self.sync

    def interrupted(self, message: str) -> Interrupted:
        """The Interrupted to raise once the loop has stopped and saved."""
        global _stopping
        _stopping = True
        return Interrupted(self.signum or signal.SIGTERM, message)


def process_pool(workers: int) -> multiprocessing.pool.Pool:
    """A spawn-context process pool whose workers ignore SIGINT.

    SIGINT is ignored in this process while the workers start (they inherit that through exec,
    so a Ctrl-C while they import prints nothing), and each worker ignores it on start-up too
    (for workers the pool starts later). Pool.terminate() still ends them with SIGTERM.
    """
    ignore = (signal.SIGINT, signal.SIG_IGN)
    with handling(signal.SIG_IGN, (signal.SIGINT,)):
        return multiprocessing.get_context("spawn").Pool(
            workers, initializer=signal.signal, initargs=ignore)
