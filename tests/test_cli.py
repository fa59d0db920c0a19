"""The `avfbp` dispatcher configures Python logging once: concise lines on stderr, absl once."""

import subprocess
import sys

from tests.train.conftest import REPO

SCRIPT = """
import logging
from absl import logging as absl_logging
from avfbp_jax import cli
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
