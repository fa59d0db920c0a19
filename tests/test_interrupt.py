"""avfbp_jax.interrupt with real signals: what each handler does, that the previous handlers come
back, that a second signal while stopping exits at once, and that pool workers ignore SIGINT."""

import signal
import subprocess
import sys

import pytest

from avfbp_jax import interrupt


def test_raise_on_signals_raises_interrupted_and_restores_the_handlers():
    before = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
    for signum, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        with pytest.raises(interrupt.Interrupted) as raised, interrupt.raise_on_signals():
            signal.raise_signal(signum)
        assert (raised.value.signum, raised.value.exit_status) == (signum, status)
        assert raised.value.message == f"interrupted by {signal.Signals(signum).name}"
        assert isinstance(raised.value, KeyboardInterrupt)
    assert {s: signal.getsignal(s) for s in interrupt.SIGNALS} == before


def test_step_stop_records_the_first_signal_and_stops_at_the_next_step():
    before = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
    with interrupt.StepStop() as stop:
        assert not stop.reached(1) and not stop.requested()
        signal.raise_signal(signal.SIGTERM)  # only recorded: the code carries on
        assert stop.reached(2) and stop.requested()
        stopped = stop.interrupted("interrupted at step 2")
    assert (stopped.signum, stopped.exit_status, stopped.message) == (
        signal.SIGTERM, 143, "interrupted at step 2")
    assert {s: signal.getsignal(s) for s in interrupt.SIGNALS} == before


# A loop under StepStop that, once asked to stop, takes its time to "save": a second Ctrl-C
# must end it at once, with one line and no traceback.
SLOW_STOP = """
import time
from avfbp_jax import interrupt
with interrupt.StepStop() as stop:
    print("ready", flush=True)
    step = 0
    while not stop.reached(step):
        step += 1
        time.sleep(0.01)
    print("stopping", flush=True)
    time.sleep(120)
"""


def test_a_second_ctrl_c_while_stopping_exits_at_once():
    proc = subprocess.Popen([sys.executable, "-c", SLOW_STOP], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline() == "stopping\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert proc.stderr.read().strip() == "avfbp: SIGINT while stopping: stopped at once"


def test_pool_workers_ignore_sigint():
    # The parent's handler is whatever it inherited (Python's default_int_handler, or SIG_IGN
    # when the tests run as a background job); it must be the same afterwards.
    before = signal.getsignal(signal.SIGINT)
    with interrupt.process_pool(1) as pool:
        assert pool.apply(signal.getsignal, (signal.SIGINT,)) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is before
