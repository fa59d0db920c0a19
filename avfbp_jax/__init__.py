"""avfbp-jax: adaptive and multi-level factorized bilinear pooling for audio-visual emotion
recognition, in JAX/Flax."""

__version__ = "0.1.0"
