"""The FBP kernel benchmark's library (tools/bench_fbp.py is its command): counts (FLOPs, bytes),
inputs, the JAX and PyTorch variants, the references they are measured against, one shape
(`bench_shape`), the sweep and targets (`run_benchmark`), and the tables and plot."""
