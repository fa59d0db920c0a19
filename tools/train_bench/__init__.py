"""The train-step benchmark's library (tools/bench_train.py is its command): one compiled step
case, the step and length sweeps, the loader benchmark, the recompilation check, the report."""
