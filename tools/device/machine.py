"""Device suite section "setup": what the numbers were measured on (machine, devices, versions,
nvidia-smi) and whether every module the package imports at the top of a module imports."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import shutil
import subprocess

import jax

from tools import bench_common as bc
from tools.device.part import Part
from tools.device.plan import Plan


def run(plan: Plan, part: Part, *, work: str, commit: str) -> None:
    """What the numbers were measured on."""
    part["commit"] = commit
    part["machine"] = bc.machine_info()
    part["devices"] = [str(d) for d in jax.devices()]
    stats = jax.devices()[0].memory_stats() or {}
    part["bytes_limit"] = stats.get("bytes_limit")
    versions = {}
    for pkg in ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint",
                "numpy", "torch", "triton", "soundfile", "soxr", "av", "ml-collections",
                "tensorboardX", "rich", "opencv-python-headless"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    part["versions"] = versions
    part["imports_ok"] = _check_imports()
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version,clocks.sm,"
                            "clocks.max.sm,power.limit,temperature.gpu", "--format=csv"],
                           capture_output=True, text=True)
        part["nvidia_smi"] = q.stdout.strip()
        print(subprocess.run([smi], capture_output=True, text=True).stdout, flush=True)
    else:
        part["nvidia_smi"] = "nvidia-smi not found"
    print(json.dumps({k: part[k] for k in ("devices", "versions", "imports_ok")}, indent=1))


def _check_imports() -> dict[str, str]:
    """Every module that the package imports at the top of a module, including the wheels."""
    out = {}
    for mod in ("soundfile", "soxr", "av", "cv2", "ml_collections", "tensorboardX", "rich",
                "avfbp_jax.commands.cli", "avfbp_jax.train.loop", "avfbp_jax.data.prepare"):
        try:
            importlib.import_module(mod)
            out[mod] = "ok"
        except Exception as e:  # noqa: BLE001 - each one recorded
            out[mod] = f"{type(e).__name__}: {e}"
    return out
