"""The `avfbp` dispatcher: every subcommand and converter answers --help; Python logging is
configured once (concise lines on stderr, absl once)."""

import importlib
import subprocess
import sys

import pytest

from avfbp_jax.commands import cli
from tests.train.conftest import REPO

SCRIPT = """
import logging
from absl import logging as absl_logging
from avfbp_jax.commands import cli
cli.configure_logging()
cli.configure_logging()  # a second call adds nothing
logging.getLogger("avfbp_jax.train.loop").info("resumed from step %d", 3)
absl_logging.warning("absl warning")
absl_logging.info("absl chatter")
logging.getLogger("jax._src.xla_bridge").info("jax chatter")
"""


def test_logging_goes_to_stderr_once_per_record():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert proc.stdout == "" and len(lines) == 2, lines
    assert lines[0].endswith(" INFO avfbp_jax.train.loop: resumed from step 3")
    assert lines[1].endswith(" WARNING absl: absl warning")


CONVERTERS = ("fer_convert", "mtcnn_convert", "alexnet_convert")


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_subcommand_answers_help(name, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: avfbp {name}")


@pytest.mark.parametrize("name", CONVERTERS)
def test_every_converter_answers_help(name, capsys):
    module = importlib.import_module(f"avfbp_jax.commands.{name}")
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    assert f"python3 -m avfbp_jax.commands.{name}" in capsys.readouterr().out
