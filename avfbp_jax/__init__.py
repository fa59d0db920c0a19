"""avfbp-jax: adaptive and multi-level factorized bilinear pooling for audio-visual emotion
recognition, in JAX/Flax."""

from avfbp_jax.version import __version__  # noqa: F401 (the package's public version)


def __getattr__(name: str):
    # `avfbp_jax.load_exported` without importing jax or model code until it is used.
    if name == "load_exported":
        from avfbp_jax.export import load_exported

        return load_exported
    raise AttributeError(f"module 'avfbp_jax' has no attribute {name!r}")

