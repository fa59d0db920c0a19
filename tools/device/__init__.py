"""The device suite's library (design brief §9; tools/device_suite.py is its command).

One run produces the whole accelerator picture: the driver (`driver.run_suite`) installs the
carried wheels, then runs each section in its own Python process with its own time budget, so
that a crash, an out-of-memory error or a hang in one section is recorded and the next one still
runs, and each section starts with the whole device memory (JAX preallocates per process; the FBP
section shares the GPU with PyTorch). A section writes its results to a JSON part file after
every case (`part.Part`), so a section stopped at its budget still reports what it finished.

Sections, in order, each a module with `run(plan, part, *, work, commit)` (the corpus section
runs in the background from the start of "pytest" on half the cores, and "host" waits for it):
  setup   machine.py     machine, driver, versions, jax.devices(), nvidia-smi, the commit
  pytest  gpu_tests.py   `pytest -m gpu` with every platform visible (JAX_PLATFORMS empty),
                         per-test outcomes
  fbp     fbp.py         tools.fbp_bench's run_benchmark at the MFB size 512:512:5:1000
  fusion  fusion.py      tools.fusion_bench's run_benchmark: the fusion family at the VQA
                         reference sizes, ours against its floor and the PyTorch twin
  train   train_step.py  the paper-sized train step: every fusion x dtype at one batch, a batch
                         sweep and the largest batch that fits, GEMM peaks timed in the same
                         process
  corpus  corpus.py      a synthetic corpus of clips as long as the step's input, and its cache
  host    host.py        loader samples/s with the machine's cores, bytes per sample,
                         host->device rate
  e2e     e2e.py         experiments/large_batch.py for a few hundred steps through
                         train_and_evaluate
Sizes and budgets are in plan.py, the tables in tables.py.
"""
