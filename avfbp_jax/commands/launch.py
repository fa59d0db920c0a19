"""`avfbp launch -n N [--cpu-devices K | --gpu-per-process] -- COMMAND ARGS...`.

Starts N processes of one multi-process run on this machine: each runs `avfbp COMMAND ARGS...`
with AVFBP_DIST=1, JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT, JAX_NUM_PROCESSES=N and its own
JAX_PROCESS_ID, which is how `avfbp train` starts jax.distributed without a cluster manager. For
tests and CPU demos, --cpu-devices K gives each process K fake CPU devices; on one machine with
several GPUs, --gpu-per-process gives process i GPU i alone (CUDA_VISIBLE_DEVICES=i).

When one process fails, the others get --grace seconds to stop on their own (jax's coordination
service notices a dead peer within train.heartbeat_timeout_s), then they are terminated; the
launcher exits with the first failure's status. Ctrl-C and SIGTERM are passed on to every
process: a training run stops at a step that all processes agree on, saves it and exits with
130 / 143 (a second Ctrl-C stops them at once), and so does the launcher. On a cluster, use its
own launcher (srun, the TPU pod's per-worker command) with train.distributed=True instead: jax
detects the processes there.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from avfbp_jax import interrupt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--num-processes", type=int, required=True)
    parser.add_argument("--port", type=int, default=0, help="coordinator port (0 = a free one)")
    devices = parser.add_mutually_exclusive_group()
    devices.add_argument("--cpu-devices", type=int, default=0,
                         help="run on the CPU with this many fake devices per process")
    devices.add_argument("--gpu-per-process", action="store_true",
                         help="process i sees only GPU i")
    parser.add_argument("--grace", type=float, default=30.0,
                        help="seconds the others get to stop after one process fails")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- then an avfbp command and its arguments, e.g. -- train ...")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(args: argparse.Namespace, port: int, index: int) -> dict[str, str]:
    """The environment of process `index`."""
    env = dict(os.environ, AVFBP_DIST="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(args.num_processes), JAX_PROCESS_ID=str(index))
    if args.cpu_devices:
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = " ".join(
            [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
            + [f"--xla_force_host_platform_device_count={args.cpu_devices}"])
    if args.gpu_per_process:
        env["CUDA_VISIBLE_DEVICES"] = str(index)
    return env


def wait_all(procs: list[subprocess.Popen], grace: float) -> int:
    """Waits for every process; once one fails, the rest get `grace` seconds, then SIGTERM,
    then SIGKILL. Returns 0, or the status of the first process that failed."""
    failed, deadline = 0, None
    while [p.poll() for p in procs].count(None):  # polls every process, not just the first
        for p in procs:
            if p.returncode not in (None, 0) and not failed:
                failed, deadline = p.returncode, time.monotonic() + grace
                print(f"avfbp launch: process {procs.index(p)} exited with status {failed}; "
                      f"stopping the others within {grace:.0f} s", file=sys.stderr, flush=True)
        if deadline is not None and time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            try:
                for p in procs:
                    p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
        time.sleep(0.2)
    return failed or next((p.returncode for p in procs if p.returncode), 0)


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.num_processes < 1 or not command:
        print("avfbp launch: error: give -n N (N >= 1) and, after --, the command to run "
              "(e.g. -- train --config ... --workdir ...)", file=sys.stderr)
        return 2
    port = args.port or free_port()
    procs: list[subprocess.Popen] = []

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    # Each process gets its own process group, so a terminal's Ctrl-C reaches only the launcher,
    # which passes every SIGINT / SIGTERM on to each process once.
    with interrupt.handling(forward):
        procs.extend(subprocess.Popen([sys.executable, "-m", "avfbp_jax.commands.cli", *command],
                                      env=process_env(args, port, i), process_group=0)
                     for i in range(args.num_processes))
        return wait_all(procs, args.grace)
