"""The fusion family (design brief section 2.5): heads over the two streams' attended sequences.

`FusionHead` turns the audio and video AttendedSequences into logits plus an aux dict; the
config field `fusion` selects one of FUSION_TYPES. All FBP variants use the one kernel in
avfbp_jax.ops.fbp.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from avfbp_jax.models.config import FBP_IMPLS, FUSION_TYPES
from avfbp_jax.ops.fbp import FBP
from avfbp_jax.ops.masking import AttendedSequence, attention_pool, trunk_masks


class AdaptiveFBP(nn.Module):
    """AG-FBP: (w_a, w_v) = softmax(MLP([c_a; c_v])), then FBP(w_a * c_a, w_v * c_v).

    Scaling the inputs scales the projections x W but not the biases b, which is what keeps the
    weights from being cancelled by FBP's L2 normalisation. Works on any leading shape.
    Returns (z [..., o], weights [..., 2]).
    """

    k: int
    o: int
    hidden: int
    dropout_rate: float
    dtype: jnp.dtype = jnp.float32
    impl: str = "xla"  # FBP.impl

    @nn.compact
    def __call__(self, c_a: jax.Array, c_v: jax.Array, *, deterministic: bool = True):
        h = jnp.concatenate([c_a, c_v], axis=-1)
        h = jnp.tanh(nn.Dense(self.hidden, dtype=self.dtype, name="weights_hidden")(h))
        logits = nn.Dense(2, dtype=self.dtype, name="weights_out")(h).astype(jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1)
        z = FBP(self.k, self.o, self.dropout_rate, dtype=self.dtype, impl=self.impl, name="fbp")(
            c_a * weights[..., :1], c_v * weights[..., 1:], deterministic=deterministic)
        return z, weights


class FusionHead(nn.Module):
    """Logits [B, num_classes] and aux from the streams (None for a stream the fusion skips).

    aux: "audio_attention" [B, Ta] and "frame_attention" [B, T] (global attention weights; zero
    on invalid steps), "modality_weights" [B, 2] (agfbp, amfbp), "trunk_modality_weights"
    [B, N, 2] and "trunk_has_data" [B, N] (amfbp).
    """

    config: ml_collections.ConfigDict  # the whole model config

    @nn.compact
    def __call__(
        self, audio: AttendedSequence | None, video: AttendedSequence | None, *, train: bool
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        if cfg.fusion not in FUSION_TYPES:
            raise ValueError(f"fusion must be one of {FUSION_TYPES}, got {cfg.fusion!r}")
        if cfg.fbp_impl not in FBP_IMPLS:
            raise ValueError(f"model.fbp_impl must be one of {FBP_IMPLS}, got {cfg.fbp_impl!r}")
        aux = {}
        c_a = c_v = None
        if audio is not None:
            c_a, weights = attention_pool(audio)
            aux["audio_attention"] = audio.per_time(weights)
        if video is not None:
            c_v, aux["frame_attention"] = attention_pool(video)

        def classifier(x, name="classifier"):
            x = nn.Dropout(cfg.head_dropout, deterministic=not train)(x)
            return nn.Dense(cfg.num_classes, dtype=dtype, name=name)(x)

        # FBP outputs have unit L2 norm, entries ~1/sqrt(o); times sqrt(o) they reach the
        # classifier at unit RMS like the other heads' inputs (chosen: otherwise the classifier
        # spends its first steps growing its weights before the logits leave chance).
        fbp_scale = cfg.fbp_o ** 0.5
        fbp_args = dict(k=cfg.fbp_k, o=cfg.fbp_o, dropout_rate=cfg.fbp_dropout, dtype=dtype,
                        impl=cfg.fbp_impl)
        adaptive_args = dict(fbp_args, hidden=cfg.adaptive_hidden)
        if cfg.fusion == "audio":
            logits = classifier(c_a)
        elif cfg.fusion == "video":
            logits = classifier(c_v)
        elif cfg.fusion == "late":
            logits_a = classifier(c_a, "audio_classifier")
            logits = 0.5 * (logits_a + classifier(c_v, "video_classifier"))
        elif cfg.fusion == "concat":
            h = nn.relu(nn.Dense(cfg.head_hidden, dtype=dtype, name="hidden")(
                jnp.concatenate([c_a, c_v], axis=-1)))
            logits = classifier(h)
        elif cfg.fusion == "gfbp":
            z = FBP(**fbp_args, name="fbp")(c_a, c_v, deterministic=not train)
            logits = classifier(fbp_scale * z)
        elif cfg.fusion == "agfbp":
            z, aux["modality_weights"] = AdaptiveFBP(**adaptive_args, name="agfbp")(
                c_a, c_v, deterministic=not train)
            logits = classifier(fbp_scale * z)
        else:  # amfbp
            z, aux["modality_weights"] = AdaptiveFBP(**adaptive_args, name="agfbp")(
                c_a, c_v, deterministic=not train)
            z_trunks, aux["trunk_modality_weights"], aux["trunk_has_data"] = self.trunks(
                audio, video, AdaptiveFBP(**adaptive_args, name="trunk_agfbp"), train)
            logits = classifier(fbp_scale * jnp.concatenate([z, z_trunks], axis=-1))
        return logits.astype(jnp.float32), aux

    def trunks(self, audio, video, adaptive: AdaptiveFBP, train: bool):
        """AM-FBP intra-trunk level: mean over non-empty trunks of AG-FBP of trunk-pooled streams.

        Both streams are split into the same N trunks of their valid time axes and re-pooled with
        their own attention scores masked to each trunk (no convolution runs again). A trunk has
        data when either stream has a valid step in it; the stream without one contributes a zero
        vector, and trunks with no data at all are left out of the mean (zero if none has data).
        """
        n = self.config.num_trunks
        audio_masks, video_masks = trunk_masks(audio, n), trunk_masks(video, n)  # [B, N, L]
        z, weights = adaptive(attention_pool(audio, audio_masks)[0],
                              attention_pool(video, video_masks)[0], deterministic=not train)
        has_data = jnp.any(audio_masks, axis=-1) | jnp.any(video_masks, axis=-1)  # [B, N]
        count = jnp.sum(has_data, axis=1, keepdims=True, dtype=jnp.float32)
        z = jnp.sum(jnp.where(has_data[..., None], z.astype(jnp.float32), 0.0), axis=1)
        return z / jnp.maximum(count, 1.0), weights, has_data
