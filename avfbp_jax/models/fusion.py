"""The fusion family (design brief section 2.5): heads over the two streams' attended sequences.

`FusionHead` turns the audio and video AttendedSequences into logits plus an aux dict; the
config field `fusion` selects one of FUSION_TYPES: single streams, concat, late, a global
bilinear head (gfbp, or a member of the family: mfh, mlb, ...) or the adaptive (agfbp) and
adaptive multi-level (amfbp) constructions, which wrap the bilinear op `fusion_op` (FBP by
default, so "AM-MUTAN" is amfbp with fusion_op "mutan"). All FBP variants use the one kernel in
avfbp_jax.ops.fbp.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from avfbp_jax.models.config import ADAPTIVE_FUSIONS, FBP_IMPLS, FUSION_OPS, FUSION_TYPES
from avfbp_jax.ops.fbp import FBP
from avfbp_jax.ops.masking import AttendedSequence, attention_pool, trunk_masks
from avfbp_jax.ops.mcb import MCB
from avfbp_jax.ops.mfh import MFH
from avfbp_jax.ops.mlb import MLB
from avfbp_jax.ops.tensor_fusion import LMF, TFN
from avfbp_jax.ops.tucker import Block, Mutan, Tucker

# The family's members other than FBP, by name (FUSION_OPS).
FAMILY: dict[str, type[nn.Module]] = {
    "mfh": MFH, "mlb": MLB, "mutan": Mutan, "tucker": Tucker, "block": Block, "mcb": MCB,
    "tfn": TFN, "lmf": LMF}
# Parameters of a member that are fixed buffers: saved with the model, never trained.
FIXED_PARAMS = {"mcb": ("sketch_x", "sketch_y")}  # MCB's count-sketch hashes and signs


def fusion_op(cfg: ml_collections.ConfigDict, op: str, dtype: jnp.dtype, name: str) -> nn.Module:
    """The bilinear fusion `op` (one of FUSION_OPS) of a model config, as a module named `name`.

    "fbp" reads fbp_k, fbp_o, fbp_dropout and fbp_impl; every other member reads its own group
    model.fusion_ops.<op>, whose fields are the module's constructor arguments.
    """
    if op == "fbp":
        return FBP(cfg.fbp_k, cfg.fbp_o, cfg.fbp_dropout, dtype=dtype, impl=cfg.fbp_impl,
                   name=name)
    return FAMILY[op](**cfg.fusion_ops[op].to_dict(), dtype=dtype, name=name)


def output_scale(cfg: ml_collections.ConfigDict, op: str) -> float:
    """What the op's output is multiplied by before the classifier.

    FBP outputs have unit L2 norm, entries ~1/sqrt(o); times sqrt(o) they reach the classifier at
    unit RMS like the other heads' inputs (chosen: otherwise the classifier spends its first
    steps growing its weights before the logits leave chance). The other members' outputs are
    not normalised (as their reference libraries define them) and pass unscaled.
    """
    return cfg.fbp_o ** 0.5 if op == "fbp" else 1.0


def fixed_param_paths(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Param paths ("fusion/mcb/sketch_x") of the model's fixed buffers, for the optimizer to
    freeze (their gradient is already zero; a weight decay or an optimizer that moves zero-gradient
    leaves would still change them)."""
    if cfg.fusion in ADAPTIVE_FUSIONS:
        op = cfg.fusion_op
        scopes = [f"agfbp/{op}"] + ([f"trunk_agfbp/{op}"] if cfg.fusion == "amfbp" else [])
    else:
        op, scopes = cfg.fusion, [cfg.fusion]
    return tuple(f"fusion/{scope}/{name}" for scope in scopes for name in FIXED_PARAMS.get(op, ()))


class Adaptive(nn.Module):
    """AG-FBP's construction around any fusion op: (w_a, w_v) = softmax(MLP([c_a; c_v])), then
    op(w_a * c_a, w_v * c_v).

    For FBP, scaling the inputs scales the projections x W but not the biases b, which is what
    keeps the weights from being cancelled by its L2 normalisation. Works on any leading shape.
    Returns (z [..., op output], weights [..., 2]).
    """

    config: ml_collections.ConfigDict  # the whole model config
    op: str = "fbp"  # one of FUSION_OPS; its module is named after it ("fbp" as in AG-FBP)

    @nn.compact
    def __call__(self, c_a: jax.Array, c_v: jax.Array, *, deterministic: bool = True):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        h = jnp.concatenate([c_a, c_v], axis=-1)
        h = jnp.tanh(nn.Dense(cfg.adaptive_hidden, dtype=dtype, name="weights_hidden")(h))
        logits = nn.Dense(2, dtype=dtype, name="weights_out")(h).astype(jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1)
        z = fusion_op(cfg, self.op, dtype, name=self.op)(
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
        if cfg.fusion_op not in FUSION_OPS:
            raise ValueError(f"model.fusion_op must be one of {FUSION_OPS}, got {cfg.fusion_op!r}")
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
        elif cfg.fusion in ADAPTIVE_FUSIONS:
            op = cfg.fusion_op
            z, aux["modality_weights"] = Adaptive(cfg, op, name="agfbp")(
                c_a, c_v, deterministic=not train)
            if cfg.fusion == "amfbp":
                z_trunks, aux["trunk_modality_weights"], aux["trunk_has_data"] = self.trunks(
                    audio, video, Adaptive(cfg, op, name="trunk_agfbp"), train)
                z = jnp.concatenate([z, z_trunks], axis=-1)
            logits = classifier(output_scale(cfg, op) * z)
        else:  # a global bilinear head: gfbp or a member of the family
            op = "fbp" if cfg.fusion == "gfbp" else cfg.fusion
            z = fusion_op(cfg, op, dtype, name=op)(c_a, c_v, deterministic=not train)
            logits = classifier(output_scale(cfg, op) * z)
        return logits.astype(jnp.float32), aux

    def trunks(self, audio, video, adaptive: Adaptive, train: bool):
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
