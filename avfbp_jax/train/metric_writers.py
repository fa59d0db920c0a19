"""Scalars of a run through one interface, as CLU's `metric_writers`: the log, TensorBoard and
WORKDIR/history.jsonl.

    writer = create_default_writer(workdir, just_logging=jax.process_index() > 0)
    writer.write_scalars(step, {"train/loss": 0.7, "val/ua": 0.5})
    writer.flush()
    writer.close()

Process 0 writes the files; the other processes only log. history.jsonl holds one JSON object
per write, {"step": 3, "val/ua": 0.5, ...}, appended and flushed as it goes; `read_history`
gives it back per scalar (for curves.png and tests).
"""

import abc
import json
import logging
import os
from collections.abc import Mapping, Sequence

from avfbp_jax import atomic

HISTORY_FILE = "history.jsonl"
TENSORBOARD_DIR = "tb"

logger = logging.getLogger(__name__)


class MetricWriter(abc.ABC):
    """Writes {name: scalar} at a step."""

    @abc.abstractmethod
    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Records the scalars of `step`."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Makes everything written so far durable."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flushes and releases the writer's files."""


class LoggingWriter(MetricWriter):
    """One INFO line per write on this module's logger: `step 3: train/loss 0.7, val/ua 0.5`."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        values = ", ".join(f"{k} {float(v):.6g}" for k, v in sorted(scalars.items()))
        logger.info("step %d: %s", step, values)

    def flush(self) -> None:
        pass  # each line goes to the log's handlers as it is written

    def close(self) -> None:
        pass


class JsonLinesWriter(MetricWriter):
    """Appends one JSON object per write to `path`.

    A run resumed at `start` drops the records after `start` (steps the interrupted run took past
    its last checkpoint, which the resumed run takes again); `start=0` starts an empty file.
    """

    def __init__(self, path: str, start: int = 0):
        records = [r for r in _read_records(path) if r["step"] <= start] if start else []
        atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in records))
        self.file = open(path, "a")  # noqa: SIM115 (closed by close())

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self.file.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorBoardWriter(MetricWriter):
    """Scalars as TensorBoard events in `logdir` (tensorboardX)."""

    def __init__(self, logdir: str):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, float(v), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MultiWriter(MetricWriter):
    """Passes every call on to each of `writers`."""

    def __init__(self, writers: Sequence[MetricWriter]):
        self.writers = tuple(writers)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for w in self.writers:
            w.write_scalars(step, scalars)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()


def create_default_writer(workdir: str, *, just_logging: bool = False,
                          start: int = 0) -> MetricWriter:
    """The log, plus (unless just_logging) WORKDIR/history.jsonl and TensorBoard in WORKDIR/tb;
    `start` is the step the run starts (or resumes) at."""
    if just_logging:
        return LoggingWriter()
    return MultiWriter([LoggingWriter(),
                        JsonLinesWriter(os.path.join(workdir, HISTORY_FILE), start),
                        TensorBoardWriter(os.path.join(workdir, TENSORBOARD_DIR))])


def _read_records(path: str) -> list[dict]:
    """The whole records of a history file (a line cut short by a kill is skipped)."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def read_history(path: str) -> dict[str, list[tuple[int, float]]]:
    """{name: [(step, value), ...]} from a history.jsonl, in the order written."""
    history: dict[str, list[tuple[int, float]]] = {}
    for record in _read_records(path):
        step = record.pop("step")
        for name, value in record.items():
            history.setdefault(name, []).append((step, value))
    return history
