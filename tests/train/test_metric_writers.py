"""Metric writers: the log line, history.jsonl (resumed runs drop the steps they take again),
TensorBoard events, process 0 alone writing files."""

import logging
import os

from avfbp_jax.train import metric_writers
from avfbp_jax.train.metric_writers import (
    HISTORY_FILE,
    JsonLinesWriter,
    create_default_writer,
    read_history,
)


def test_default_writer_writes_history_tensorboard_and_the_log(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=metric_writers.__name__)
    writer = create_default_writer(str(tmp_path))
    writer.write_scalars(1, {"train/loss": 2.0, "perf/samples_per_s": 10})
    writer.write_scalars(2, {"train/loss": 1.5, "val/ua": 0.25})
    writer.flush()
    assert read_history(str(tmp_path / HISTORY_FILE)) == {
        "train/loss": [(1, 2.0), (2, 1.5)], "perf/samples_per_s": [(1, 10.0)],
        "val/ua": [(2, 0.25)]}
    writer.close()
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))
    assert "step 2: train/loss 1.5, val/ua 0.25" in caplog.messages


def test_just_logging_writes_no_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=metric_writers.__name__)
    writer = create_default_writer(str(tmp_path), just_logging=True)
    writer.write_scalars(3, {"val/wa": 0.5})
    writer.close()
    assert os.listdir(tmp_path) == [] and caplog.messages == ["step 3: val/wa 0.5"]


def test_a_resumed_run_drops_the_steps_it_takes_again(tmp_path):
    path = str(tmp_path / HISTORY_FILE)
    writer = JsonLinesWriter(path)
    for step in (1, 2, 3, 4):
        writer.write_scalars(step, {"train/loss": float(step)})
    writer.close()
    with open(path, "a") as f:
        f.write('{"step": 5, "train/lo')  # a line cut short by a kill
    writer = JsonLinesWriter(path, start=2)  # resumed from the checkpoint of step 2
    writer.write_scalars(3, {"train/loss": 30.0})
    writer.close()
    assert read_history(path) == {"train/loss": [(1, 1.0), (2, 2.0), (3, 30.0)]}
    JsonLinesWriter(path).close()  # a new run (no checkpoint) starts an empty history
    assert read_history(path) == {}
