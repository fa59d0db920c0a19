"""`avfbp launch`: per-process environment, and a failed process stops the others in time."""

import argparse
import subprocess
import sys
import time

from avfbp_jax.commands import launch


def parse(*argv):
    parser = argparse.ArgumentParser()
    launch.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_process_environment():
    args = parse("-n", "3", "--cpu-devices", "4", "--", "train", "--config", "x.py")
    env = launch.process_env(args, 1234, 2)
    assert env["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:1234"
    assert (env["JAX_NUM_PROCESSES"], env["JAX_PROCESS_ID"], env["AVFBP_DIST"]) == ("3", "2", "1")
    assert env["XLA_FLAGS"].split().count("--xla_force_host_platform_device_count=4") == 1
    assert launch.process_env(parse("-n", "2", "--gpu-per-process"), 1, 1)[
        "CUDA_VISIBLE_DEVICES"] == "1"
    assert args.command == ["--", "train", "--config", "x.py"]


def test_one_failure_stops_the_rest_within_the_grace_period():
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]),
             subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(1); "
                               "sys.exit(7)"])]
    start = time.monotonic()
    assert launch.wait_all(procs, grace=2.0) == 7
    assert time.monotonic() - start < 20
    assert procs[0].returncode is not None and procs[0].returncode != 0


def test_all_succeed():
    procs = [subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(2)]
    assert launch.wait_all(procs, grace=1.0) == 0
