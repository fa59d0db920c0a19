"""The device suite: the whole accelerator table in one command (design brief §9, issue 12).

Run it on the GPU machine with ONE call of the device tool. First, here, in the root of the
checkout that the tool sends (the session's own), download the wheels the GPU image lacks
(37 MB into the git-ignored .whl/; they travel with `carry`):

    tools/device_wheels.sh

then call the tool's `run` once, COMMIT replaced by the output of `git rev-parse --short HEAD`:

    run(command="PYTHONUNBUFFERED=1 timeout 570 python3 -m tools.device_suite --commit COMMIT",
        carry=[".whl"], timeout_s=600)

It writes suite.json (everything), suite.md (the README-ready tables with device, date and
commit) and suite.log (every section's output) into --out ($OUT there) and prints the tables
last. `--dry-run` runs every section at tiny sizes on the CPU (tests/tools/test_device_suite.py
does, so the suite cannot rot unseen).

Time budget on one H200 with 16 cores, 8 minutes in all (Plan.device() in tools/device/plan.py).
Sections run one after another and each must end by the sum of its own and the earlier
sections' budgets (time an earlier section left goes to the next one; only "train" and "twin"
have more cases to spend it on); a section still running 20 s past that is killed, its finished
cases kept.
  setup   20 s  installs the wheels (~10 s), one jax start, nvidia-smi
  pytest  90 s  the gpu tests (train step with each FBP kernel, the Pallas FBP on Triton and on
                Mosaic GPU): each compiles small programs on the GPU and the CPU
  fbp    105 s  batches 65536 and 8192 x bf16 and f32 x fwd and fwd+bwd x every variant (the
                Mosaic GPU kernel too: one that fails to compile or run is a note, not a stop),
                one run_benchmark call per batch and dtype (each saved when done);
                torch.compile compiles each shape and mode (8 compiles, about 5-10 s each; the
                first in a process more), the kernels themselves take milliseconds
  fusion  35 s  the fusion family (tools.fusion_bench) at the VQA reference sizes, 4800 x 2048
                inputs, batch 2304, bf16: each member (ours, floor, torch eager, fwd and fwd+bwd,
                checked against the twin first) takes ~5 s, mostly 5 XLA compiles and the
                float64 reference, so members run in the model's order while 6 s are left and
                the rest are listed as skipped. Its 35 s came from train (the section that
                lists what does not fit rather than failing); time fusion leaves goes to train
  train   40 s  compiling the paper-sized step is the cost (7 s on a 2-core CPU at batch 8;
                more with GPU autotuning), so not every fusion x dtype x batch. In this order,
                each for bf16 then f32: amfbp at 256 and 1024 and its largest batch; the other
                six fusions at 256; amfbp with the Pallas FBP at 1024; amfbp at 64; gfbp's
                largest batch. What does not fit in time is listed as skipped; time that pytest,
                fbp and fusion leave goes here
  twin    45 s  amfbp at batch 256 against its PyTorch twin (tools/train_bench/twin.py), width
                1 then 0.125, bf16 then f32: ours and the eager twin timed and saved first,
                then torch.compile (its compile of forward, backward and AdamW is the cost) and
                all three again; cases that cannot fit are listed as skipped; time the train
                section leaves goes here
  corpus 170 s  in the background of pytest, fbp, fusion, train and twin, on 8 processes (half
                the cores, so the timed sections keep theirs): 1464 clips of 3.6-4 s synthesised
                (~5 clips/s per core here) and prepared (~2.5 clips/s per core)
  host    25 s  loader at batch 256 and 1024 with 16 threads, bytes per sample, host->device
  e2e    120 s  large_batch.py, 300 steps of 1024 in bf16 + one evaluation (two compiles)
"""

import argparse
import os
import subprocess
import sys

from tools import REPO
from tools.device.driver import run_suite
from tools.device.part import run_section
from tools.device.plan import SECTIONS, Plan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT"),
                   help="output folder (default: $OUT)")
    p.add_argument("--commit", default=None,
                   help="the commit measured (default: git rev-parse --short HEAD, if .git is "
                        "there; the GPU machine gets no .git, so pass it)")
    p.add_argument("--wheels", default=None,
                   help="folder of wheels to install (default: .whl; none in a dry run)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section
    p.add_argument("--plan", help=argparse.SUPPRESS)
    p.add_argument("--part", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.section:
        return run_section(args.section, args.plan, args.part)
    if not args.out:
        p.error("--out: no output folder given and $OUT is not set")
    only = tuple(s for s in args.sections.split(",") if s)
    if set(only) - set(SECTIONS):
        p.error(f"--sections: choose from {','.join(SECTIONS)}")
    commit = args.commit or _git_commit()
    wheels = args.wheels if args.wheels is not None else ("" if args.dry_run else
                                                          os.path.join(REPO, ".whl"))
    plan = Plan.dry() if args.dry_run else Plan.device()
    result = run_suite(plan, args.out, commit=commit, wheels=wheels, only=only)
    print(result["markdown"])
    return 0


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
