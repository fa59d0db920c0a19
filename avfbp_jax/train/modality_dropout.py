"""Training and evaluating for a missing modality, through the masks the model already honours.

A clip without audio has audio_len 0 and a clip without faces has every frame masked: the stream
then pools nothing and contributes zero features (what `avfbp predict` feeds the model when a
recording has no usable audio or no face). Modality dropout removes one of the two, per clip, with
probability `train.modality_dropout`, so the fused head learns to predict from either stream alone.
"""

import jax
import jax.numpy as jnp
import numpy as np

MODALITIES = ("audio", "faces")


def drop_modalities(batch: dict, rng: jax.Array, rate: float | jax.Array) -> dict:
    """Per clip, with probability `rate` (a traced scalar too), removes its audio or its faces
    (equally likely).

    A clip never loses its last modality: audio is only removed where a face is present, faces
    only where audio is.
    """
    drop_rng, which_rng = jax.random.split(rng)
    rows = batch["audio_len"].shape[0]
    drop = jax.random.bernoulli(drop_rng, rate, (rows,))
    audio_side = jax.random.bernoulli(which_rng, 0.5, (rows,))
    has_audio = batch["audio_len"] > 0
    has_faces = jnp.any(batch["frame_mask"], axis=1)
    drop_audio = drop & audio_side & has_faces
    drop_faces = drop & ~audio_side & has_audio
    return {**batch, "audio_len": jnp.where(drop_audio, 0, batch["audio_len"]),
            "frame_mask": batch["frame_mask"] & ~drop_faces[:, None]}


def remove_modality(batch: dict, modality: str) -> dict:
    """A host batch with one modality ("audio" or "faces") removed from every clip (to evaluate
    a model on what predict meets when a stream is missing)."""
    if modality == "audio":
        return {**batch, "audio_len": np.zeros_like(batch["audio_len"])}
    if modality == "faces":
        return {**batch, "frame_mask": np.zeros_like(batch["frame_mask"])}
    raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
