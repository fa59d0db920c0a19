"""What a run ran on: package versions, the source's git commit, devices and CPU.

Written once per start to WORKDIR/environment.json, so a result can be traced to the code and the
machine that produced it (the README's bit-reproducibility holds only on the same machine and
core count). Export bundles record the same package versions.
"""

import datetime
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys

import jax

from avfbp_jax import atomic
from avfbp_jax.version import __version__

ENVIRONMENT_FILE = "environment.json"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections")


def package_versions() -> dict[str, str | None]:
    """Versions of Python, this package and PACKAGES (None for one that is not installed)."""
    versions = {"python": platform.python_version(), "avfbp_jax": __version__}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_state() -> dict:
    """{"git_commit": HEAD, "git_dirty": tracked files changed} of the git checkout that holds
    this package's source; "unknown" and None for an installed copy (or without git)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()

    try:
        toplevel, commit = git("rev-parse", "--show-toplevel", "HEAD").splitlines()
        if os.path.realpath(toplevel) != os.path.realpath(root):  # a repository around a venv
            raise ValueError(toplevel)
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, ValueError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, else what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """The environment of this process: time, command, host, CPU, devices, versions, commit."""
    device = jax.devices()[0]
    return {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "devices": {"platform": device.platform, "kind": device.device_kind,
                    "count": jax.device_count(), "processes": jax.process_count()},
        "versions": package_versions(),
        **git_state(),
    }


def write_environment(workdir: str) -> dict:
    """Writes describe() to WORKDIR/environment.json atomically and returns it."""
    info = describe()
    atomic.write_json(os.path.join(workdir, ENVIRONMENT_FILE), info, indent=2, sort_keys=True)
    return info
