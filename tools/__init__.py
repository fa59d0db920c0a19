"""Benchmarks and utilities, run from the repository root as `python3 -m tools.NAME`.

Commands: bench_fbp (the FBP kernel), bench_fusion (the fusion family against floors and torch),
bench_train (train step, lengths, loader, recompiles), forward_time (parameters and forward time
per fusion), device_suite (the accelerator table in one call), run_table (an experiment's
variants over seeds), synthetic_proxy (hand-feature check of the synthetic corpus). Their
libraries: bench_common, fbp_bench/, fusion_bench/, train_bench/, device/.
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout's root
