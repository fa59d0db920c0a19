"""PyTorch twins of this package's computations, for tests (equality) and benchmarks (speed).

Each twin loads our Flax parameters and computes the same function in torch: the whole model
(`model`), and the members of the bilinear fusion family as their reference libraries define
them. torch is imported by the callers that need it (it is an optional, test/bench dependency).
"""
