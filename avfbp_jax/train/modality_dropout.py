"""Training and evaluating for a missing modality, through the masks the model already honours.

A clip without audio has audio_len 0 and a clip without faces has every frame masked: the stream
then pools nothing and contributes zero features (what `avfbp predict` feeds the model when a
recording has no usable audio or no face). Modality dropout removes one of the two, per clip, with
probability `train.modality_dropout`, so the fused head learns to predict from either stream alone.
"""

import jax
import jax.numpy as jnp

MODALITIES = ("audio", "faces")


def _without(batch: dict, drop_audio: jax.Array, drop_faces: jax.Array) -> dict:
    """batch with the audio of rows where drop_audio and the faces of rows where drop_faces
    masked out ([B] bools)."""
    return {**batch,
            "audio_len": jnp.where(drop_audio, 0, batch["audio_len"]),
            "frame_mask": batch["frame_mask"] & ~drop_faces[:, None]}


def drop_modalities(batch: dict, rng: jax.Array, rate: float) -> dict:
    """Per clip, with probability `rate`, removes its audio or its faces (equally likely).

    A clip never loses its last modality: audio is only removed where a face is present, faces
    only where audio is.
    """
    drop_rng, which_rng = jax.random.split(rng)
    rows = batch["audio_len"].shape[0]
    drop = jax.random.bernoulli(drop_rng, rate, (rows,))
    audio_side = jax.random.bernoulli(which_rng, 0.5, (rows,))
    has_audio = batch["audio_len"] > 0
    has_faces = jnp.any(batch["frame_mask"], axis=1)
    return _without(batch, drop & audio_side & has_faces, drop & ~audio_side & has_audio)


def remove_modality(batch: dict, modality: str) -> dict:
    """batch with one modality ("audio" or "faces") removed from every clip (for evaluation)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    rows = batch["audio_len"].shape[0]
    everywhere = jnp.ones(rows, bool)
    nowhere = jnp.zeros(rows, bool)
    if modality == "audio":
        return _without(batch, everywhere, nowhere)
    return _without(batch, nowhere, everywhere)
