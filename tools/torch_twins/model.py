"""PyTorch twin of the whole model (avfbp_jax.models.model.AVModel), for equality tests and speed
comparisons: the same function, written with torch's own layers (NCHW convolutions,
nn.Linear, nn.LayerNorm, F.local_response_norm, torch.fft).

    twin = AVModelTwin(model_config())
    load_params(twin, flax_params)               # our Flax parameters, copied into the twin
    logits = twin.eval()(to_torch(batch))        # our batch (numpy), same lengths and masks

Each torch module is named as its Flax counterpart, so a torch parameter's path is the Flax
path ("audio.fcn.conv1.weight" <-> audio/fcn/conv1/kernel); `load_params` and `flax_layout` move
values between the two layouts. `twin.double()` gives the float64 reference of the tests;
bfloat16 runs the float32 twin under torch.autocast (parameters stay float32, as in ours), and
the parts that ours computes in float32 (spectrogram, LRN, attention weights and pooling, the
AG-FBP weights, FBP after its projections, the logits) are computed in float32 there too.
Dropout (FBP products, classifier inputs) follows the module's train()/eval() mode.

Every fusion type is twinned: a member of the bilinear family (global, or inside AG/AM-FBP's
construction through fusion_op) is its reference transcription from tools/torch_twins
(block.bootstrap's MFH, MLB, MUTAN, Tucker, BLOCK, MCB; TFN and LMF), named as our module; MCB's
count-sketch buffers load from, and read back as, our fixed parameters sketch_x/sketch_y.

The frozen FER encoder (video.encoder "fer") is twinned too, features only: its classifier
convolution, which ours evaluates and discards, is not loaded (`UNUSED`).
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avfbp_jax.data.cache import PCM_SCALE
from avfbp_jax.models import fer
from avfbp_jax.models.audio import scaled_channels
from avfbp_jax.models.config import ADAPTIVE_FUSIONS, FUSION_TYPES
from avfbp_jax.models.fusion import output_scale
from avfbp_jax.models.model import uses_audio, uses_video
from tools.torch_twins.block_fusions import MLB, Block, Mutan, Tucker
from tools.torch_twins.fbp import fbp, full_precision
from tools.torch_twins.mfh_mcb import TorchMCB, TorchMFH
from tools.torch_twins.tensor_fusion import LMFFusion, TFNFusion

# Flax parameter subtrees the twin does not hold: what the model computes and never uses.
UNUSED = ("video/encoder/classifier",)
LAYER_NORM_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon (torch's is 1e-5)
SPEC_NORM_EPS = 1e-5  # frontend.normalize_utterance's eps


# --- masks (avfbp_jax.ops.masking) ---------------------------------------------------------


def length_mask(length: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size] bool, True at positions < length."""
    return torch.arange(size, device=length.device) < length[:, None]


def conv_output_length(length: torch.Tensor, kernel: int, stride: int, pad_total: int
                       ) -> torch.Tensor:
    """Valid output steps of a conv/pool with `pad_total` padding over `length` valid steps."""
    out = torch.div(length + pad_total - kernel, stride, rounding_mode="floor") + 1
    return torch.where(length > 0, out.clamp(min=0), 0)


def zero_invalid(x: torch.Tensor, length: torch.Tensor, dim: int) -> torch.Tensor:
    """x with steps >= length along `dim` (batch on dim 0) set to zero."""
    shape = [1] * x.ndim
    shape[0], shape[dim] = x.shape[0], x.shape[dim]
    return torch.where(length_mask(length, x.shape[dim]).reshape(shape), x, 0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    total = torch.where(mask, x, 0).sum(dim)
    count = mask.expand_as(x).sum(dim).to(x.dtype)
    return total / torch.where(count > 0, count, 1)


class Attended(NamedTuple):
    """A stream's steps before pooling (masking.AttendedSequence)."""

    features: torch.Tensor  # [B, L, C]
    scores: torch.Tensor  # [B, L] full precision
    mask: torch.Tensor  # [B, L] bool
    step: torch.Tensor  # [B, L] time index of each step
    length: torch.Tensor  # [B] valid time steps
    normalizer: str  # "softmax" or "sigmoid"


def attention_weights(seq: Attended, mask: torch.Tensor) -> torch.Tensor:
    """Weights over the steps restricted to `mask` [B, ..., L]; all zero where none is valid."""
    scores = seq.scores.reshape(seq.scores.shape[:1] + (1,) * (mask.ndim - 2)
                                + seq.scores.shape[1:]).expand(mask.shape)
    if seq.normalizer == "softmax":
        s = scores.masked_fill(~mask, -torch.inf)
        peak = s.amax(-1, keepdim=True)
        peak = torch.where(torch.isfinite(peak), peak, 0).detach()
        w = torch.where(mask, torch.exp(s - peak), 0)
    else:
        w = torch.where(mask, torch.sigmoid(scores), 0)
    total = w.sum(-1, keepdim=True)
    return w / torch.where(total > 0, total, 1)


def attention_pool(seq: Attended, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention-weighted sum of the features [B, ..., C], in full precision (no autocast)."""
    w = attention_weights(seq, seq.mask if mask is None else mask)
    with torch.autocast(w.device.type, enabled=False):
        return torch.einsum("b...l,blc->b...c", w, full_precision(seq.features))


def trunk_masks(seq: Attended, num_trunks: int) -> torch.Tensor:
    """[B, N, L]: step t of a recording of T valid steps is in trunk (N t) // T."""
    trunk = torch.div(num_trunks * seq.step, seq.length.clamp(min=1)[:, None],
                      rounding_mode="floor")
    ids = torch.arange(num_trunks, device=trunk.device)[None, :, None]
    return seq.mask[:, None, :] & (trunk[:, None, :] == ids)


# --- audio (avfbp_jax.models.frontend, audio) ----------------------------------------------


def log_spectrogram(audio: torch.Tensor, audio_len: torch.Tensor,
                    cfg: ml_collections.ConfigDict, dtype: torch.dtype
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log power spectrogram [B, F, n_bins] of valid whole frames, per-utterance normalised."""
    win, hop = cfg.win_length, cfg.hop_length
    x = audio.to(dtype)
    if not audio.is_floating_point():
        x = x / PCM_SCALE
    x = zero_invalid(x, audio_len, 1)
    window = torch.hamming_window(win, periodic=True, dtype=dtype, device=x.device)
    spectrum = torch.fft.rfft(x.unfold(1, win, hop) * window, n=cfg.n_fft)[..., : cfg.n_bins]
    # |X|^2 from the real view: real operations, which torch.compile fuses (complex ones it leaves)
    power = torch.view_as_real(spectrum).square().sum(-1)
    spec = torch.log(torch.clamp(power, min=cfg.log_floor))
    spec_len = torch.where(audio_len >= win, torch.div(audio_len - win, hop,
                                                       rounding_mode="floor") + 1, 0)
    if cfg.normalize:
        mask = length_mask(spec_len, spec.shape[1])[:, :, None]
        mean = masked_mean(spec, mask, 1)[:, None]
        var = masked_mean(torch.square(spec - mean), mask, 1)[:, None]
        spec = (spec - mean) * torch.rsqrt(var + SPEC_NORM_EPS)
    return zero_invalid(spec, spec_len, 1), spec_len


class AudioFCN(nn.Module):
    """The AlexNet-style stack over [B, 1, T, F] (time is H): conv, ReLU, LRN, max-pool, mask."""

    def __init__(self, cfg: ml_collections.ConfigDict):
        super().__init__()
        self.cfg = cfg
        self.layers = []  # (name, kernel, stride, pad)
        cin = 1
        for i, (c, k) in enumerate(zip(scaled_channels(cfg.channels, cfg.width), cfg.kernels,
                                       strict=True)):
            stride, pad = (cfg.conv1_stride, cfg.conv1_pad) if i == 0 else (1, k // 2)
            self.add_module(f"conv{i + 1}", nn.Conv2d(cin, c, k, stride, pad))
            self.layers.append((f"conv{i + 1}", k, stride, pad))
            cin = c
        self.channels = cin

    def forward(self, x: torch.Tensor, length: torch.Tensor):
        cfg = self.cfg
        for i, (name, k, stride, pad) in enumerate(self.layers):
            x = F.relu(getattr(self, name)(x))
            length = conv_output_length(length, k, stride, 2 * pad)
            if i in cfg.lrn_after:
                x = F.local_response_norm(full_precision(x), cfg.lrn_size, cfg.lrn_alpha,
                                          cfg.lrn_beta, cfg.lrn_k).to(x.dtype)
            if i in cfg.pool_after:
                x = F.max_pool2d(x, cfg.pool_window, cfg.pool_stride)
                length = conv_output_length(length, cfg.pool_window, cfg.pool_stride, 0)
            x = zero_invalid(x, length, 2)
        return x, length


class AudioStream(nn.Module):
    """Waveform -> spectrogram -> FCN -> 1-D (time) or 2-D (time x frequency) attention steps."""

    def __init__(self, cfg: ml_collections.ConfigDict):
        super().__init__()
        self.cfg = cfg
        self.fcn = AudioFCN(cfg.audio)
        c = self.fcn.channels
        self.norm = nn.LayerNorm(c, eps=LAYER_NORM_EPS) if cfg.audio.layer_norm else None
        self.attention_hidden = nn.Linear(c, cfg.audio.attention_dim)
        self.attention_score = nn.Linear(cfg.audio.attention_dim, 1, bias=False)

    def forward(self, audio: torch.Tensor, audio_len: torch.Tensor, dtype: torch.dtype):
        cfg = self.cfg.audio
        spec, spec_len = log_spectrogram(audio, audio_len, self.cfg.frontend, dtype)
        h, length = self.fcn(spec[:, None], spec_len)  # [B, C, T, F]
        batch, _, steps, freq = h.shape
        time = torch.arange(steps, device=h.device).expand(batch, steps)
        mask = time < length[:, None]
        if cfg.attention == "1d":
            h = h.mean(3).transpose(1, 2)  # [B, T, C]
        else:  # "2d": every (time, frequency) cell, time-major
            h = h.permute(0, 2, 3, 1).reshape(batch, steps * freq, -1)
            time = time.repeat_interleave(freq, dim=1)
            mask = mask.repeat_interleave(freq, dim=1)
        if self.norm is not None:
            h = self.norm(h)
        e = self.attention_score(torch.tanh(self.attention_hidden(h)))
        scores = cfg.attention_lambda * full_precision(e[..., 0])
        return Attended(h, scores, mask, time, length, "softmax")


# --- video (avfbp_jax.models.video, fer) ---------------------------------------------------


class FaceCNN(nn.Module):
    """(3x3 conv SAME, ReLU, 2x2 max-pool) per width, flatten (H, W, C order, as Flax), dense."""

    def __init__(self, crop_size: int, channels: tuple[int, ...], feature_dim: int):
        super().__init__()
        self.names = [f"conv{i + 1}" for i in range(len(channels))]
        side, cin = crop_size, 1
        for name, c in zip(self.names, channels, strict=True):
            self.add_module(name, nn.Conv2d(cin, c, 3, padding=1))
            side, cin = side // 2, c
        self.project = nn.Linear(side * side * cin, feature_dim)

    def forward(self, frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        b, t, height, width = frames.shape
        x = frames.reshape(b * t, 1, height, width).to(dtype) * (2.0 / 255.0) - 1.0
        for name in self.names:
            x = F.max_pool2d(F.relu(getattr(self, name)(x)), 2)
        x = F.relu(self.project(x.permute(0, 2, 3, 1).reshape(b * t, -1)))
        return x.reshape(b, t, -1)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(low, high) padding of a 'SAME' window (XLA's rule: the extra one goes high)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class FrozenBatchNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * scale + bias with stored statistics (fer.FrozenBatchNorm)."""

    def __init__(self, channels: int):
        super().__init__()
        for name, init in (("scale", torch.ones), ("bias", torch.zeros), ("mean", torch.zeros),
                           ("var", torch.ones)):
            self.register_parameter(name, nn.Parameter(init(channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        scale = torch.rsqrt(self.var + fer.BN_EPSILON) * self.scale
        return (x - self.mean.view(shape)) * scale.view(shape) + self.bias.view(shape)


class SeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """mini-Xception block: two separable convs, 'SAME' 3x3/2 max-pool, strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual_conv = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.residual_bn = FrozenBatchNorm(cout)
        self.sep_conv1, self.sep_bn1 = SeparableConv(cin, cout), FrozenBatchNorm(cout)
        self.sep_conv2, self.sep_bn2 = SeparableConv(cout, cout), FrozenBatchNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.residual_bn(self.residual_conv(x))  # 1x1 stride 2 'SAME' pads nothing
        x = F.relu(self.sep_bn1(self.sep_conv1(x)))
        x = self.sep_bn2(self.sep_conv2(x))
        (lo_h, hi_h), (lo_w, hi_w) = (_same_pads(s, 3, 2) for s in x.shape[2:])
        x = F.max_pool2d(F.pad(x, (lo_w, hi_w, lo_h, hi_h), value=-torch.inf), 3, 2)
        return x + residual


class FerEncoder(nn.Module):
    """The frozen FER port (fer.FerEncoder) as a feature extractor: uint8 [B, T, 64, 64] ->
    [B, T, 128], the global average pool of block4; no gradient, parameters not trainable."""

    def __init__(self):
        super().__init__()
        self.stem_conv1, self.stem_bn1 = nn.Conv2d(1, 8, 3, bias=False), FrozenBatchNorm(8)
        self.stem_conv2, self.stem_bn2 = nn.Conv2d(8, 8, 3, bias=False), FrozenBatchNorm(8)
        cin = 8
        for i, width in enumerate(fer.BLOCK_WIDTHS):
            self.add_module(f"block{i + 1}", ResidualBlock(cin, width))
            cin = width
        self.requires_grad_(False)

    def forward(self, frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        b, t, height, width = frames.shape
        with torch.no_grad(), torch.autocast(frames.device.type, enabled=False):
            x = (frames.reshape(b * t, 1, height, width).to(dtype) / 255.0 - 0.5) * 2.0
            x = F.relu(self.stem_bn1(self.stem_conv1(x)))
            x = F.relu(self.stem_bn2(self.stem_conv2(x)))
            for i in range(len(fer.BLOCK_WIDTHS)):
                x = getattr(self, f"block{i + 1}")(x)
            return x.mean((2, 3)).reshape(b, t, -1)


class VideoStream(nn.Module):
    """Per-frame encoder ("cnn", "fer" or "identity"), LayerNorm, q^T f + b frame scores."""

    def __init__(self, cfg: ml_collections.ConfigDict):
        super().__init__()
        self.cfg = cfg
        if cfg.encoder == "cnn":
            self.encoder = FaceCNN(cfg.crop_size, tuple(cfg.cnn_channels), cfg.feature_dim)
        elif cfg.encoder == "fer":
            self.encoder = FerEncoder()
        self.dim = fer.FEATURE_DIM if cfg.encoder == "fer" else cfg.feature_dim
        self.norm = nn.LayerNorm(self.dim, eps=LAYER_NORM_EPS) if cfg.layer_norm else None
        self.attention = nn.Linear(self.dim, 1)

    def forward(self, frames: torch.Tensor, frame_len: torch.Tensor, frame_mask: torch.Tensor,
                dtype: torch.dtype) -> Attended:
        f = frames.to(dtype) if self.cfg.encoder == "identity" else self.encoder(frames, dtype)
        if self.norm is not None:
            f = self.norm(f)
        batch, steps = f.shape[:2]
        scores = full_precision(self.attention(f)[..., 0])
        mask = frame_mask.bool() & length_mask(frame_len, steps)
        time = torch.arange(steps, device=f.device).expand(batch, steps)
        return Attended(f, scores, mask, time, frame_len, self.cfg.attention)


# --- fusion (avfbp_jax.models.fusion, ops.fbp) ---------------------------------------------


class FBP(nn.Module):
    """Factorized bilinear pooling with W_x [m, k*o], W_y [n, k*o] (Flax layout) and biases."""

    def __init__(self, m: int, n: int, k: int, o: int, dropout: float):
        super().__init__()
        self.k, self.dropout = k, dropout
        self.w_x = nn.Parameter(torch.zeros(m, k * o))
        self.w_y = nn.Parameter(torch.zeros(n, k * o))
        self.b_x = nn.Parameter(torch.zeros(k * o))
        self.b_y = nn.Parameter(torch.zeros(k * o))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return fbp(x, y, self.w_x, self.w_y, self.b_x, self.b_y, self.k, self.dropout,
                   self.training)


# block.bootstrap's members: constructor (input_dims, **model.fusion_ops.<op>), forward([x, y]).
BLOCK_STYLE = {"mfh": TorchMFH, "mlb": MLB, "mutan": Mutan, "tucker": Tucker, "block": Block,
               "mcb": TorchMCB}


def op_module(cfg: ml_collections.ConfigDict, op: str, m: int, n: int) -> nn.Module:
    """The twin of fusion op `op` (one of FUSION_OPS) over inputs of m and n features: FBP, or a
    family member's reference transcription built from its group model.fusion_ops.<op>."""
    if op == "fbp":
        return FBP(m, n, cfg.fbp_k, cfg.fbp_o, cfg.fbp_dropout)
    s = cfg.fusion_ops[op].to_dict()
    if op == "tfn":
        return TFNFusion(m, n, s["post_fusion_dim"], s["output_dim"], s["post_fusion_dropout"])
    if op == "lmf":
        return LMFFusion(m, n, s["output_dim"], s["rank"])
    return BLOCK_STYLE[op]([m, n], **s)


def op_output_dim(cfg: ml_collections.ConfigDict, op: str) -> int:
    return cfg.fbp_o if op == "fbp" else cfg.fusion_ops[op].output_dim


def call_op(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """module's output on x [..., m], y [..., n]. The references are written for [B, d] (and
    block.bootstrap's take the pair as one argument), so leading axes are flattened; MCB's
    count sketches and FFTs get float32 or wider inputs, as ours compute them."""
    lead = x.shape[:-1]
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    if isinstance(module, (FBP, TFNFusion, LMFFusion)):
        out = module(x, y)
    else:
        if isinstance(module, TorchMCB):
            x, y = full_precision(x), full_precision(y)
        out = module([x, y])
    return out.reshape(*lead, out.shape[-1])


class Adaptive(nn.Module):
    """AG-FBP's construction around fusion op `op`: (w_a, w_v) = softmax(MLP([c_a; c_v])),
    op(w_a c_a, w_v c_v); any leading shape. The op is an attribute named `op`, as in ours."""

    def __init__(self, cfg: ml_collections.ConfigDict, op: str, m: int, n: int):
        super().__init__()
        self.op = op
        self.weights_hidden = nn.Linear(m + n, cfg.adaptive_hidden)
        self.weights_out = nn.Linear(cfg.adaptive_hidden, 2)
        self.add_module(op, op_module(cfg, op, m, n))

    def forward(self, c_a: torch.Tensor, c_v: torch.Tensor):
        h = torch.tanh(self.weights_hidden(torch.cat([c_a, c_v], -1)))
        weights = torch.softmax(full_precision(self.weights_out(h)), -1)
        z = call_op(getattr(self, self.op), c_a * weights[..., :1], c_v * weights[..., 1:])
        return z, weights


class FusionHead(nn.Module):
    """Logits [B, num_classes] from the pooled streams, for every fusion type."""

    def __init__(self, cfg: ml_collections.ConfigDict, audio_dim: int, video_dim: int):
        super().__init__()
        self.cfg = cfg
        k = cfg.num_classes
        if cfg.fusion in ("audio", "video"):
            self.classifier = nn.Linear(audio_dim if cfg.fusion == "audio" else video_dim, k)
        elif cfg.fusion == "late":
            self.audio_classifier = nn.Linear(audio_dim, k)
            self.video_classifier = nn.Linear(video_dim, k)
        elif cfg.fusion == "concat":
            self.hidden = nn.Linear(audio_dim + video_dim, cfg.head_hidden)
            self.classifier = nn.Linear(cfg.head_hidden, k)
        elif cfg.fusion in ADAPTIVE_FUSIONS:
            self.op = cfg.fusion_op
            self.agfbp = Adaptive(cfg, self.op, audio_dim, video_dim)
            levels = 1
            if cfg.fusion == "amfbp":
                self.trunk_agfbp = Adaptive(cfg, self.op, audio_dim, video_dim)
                levels = 2
            self.classifier = nn.Linear(levels * op_output_dim(cfg, self.op), k)
        elif cfg.fusion in FUSION_TYPES:  # a global bilinear head: gfbp or a family member
            self.op = "fbp" if cfg.fusion == "gfbp" else cfg.fusion
            self.add_module(self.op, op_module(cfg, self.op, audio_dim, video_dim))
            self.classifier = nn.Linear(op_output_dim(cfg, self.op), k)
        else:
            raise ValueError(f"fusion: the twin has no fusion {cfg.fusion!r}")

    def classify(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return layer(F.dropout(x, self.cfg.head_dropout, self.training))

    def forward(self, audio: Attended | None, video: Attended | None) -> torch.Tensor:
        cfg = self.cfg
        c_a = None if audio is None else attention_pool(audio)
        c_v = None if video is None else attention_pool(video)
        if cfg.fusion == "audio":
            logits = self.classify(self.classifier, c_a)
        elif cfg.fusion == "video":
            logits = self.classify(self.classifier, c_v)
        elif cfg.fusion == "late":
            logits = 0.5 * (self.classify(self.audio_classifier, c_a)
                            + self.classify(self.video_classifier, c_v))
        elif cfg.fusion == "concat":
            h = F.relu(self.hidden(torch.cat([c_a, c_v], -1)))
            logits = self.classify(self.classifier, h)
        else:
            if cfg.fusion in ADAPTIVE_FUSIONS:
                z = self.agfbp(c_a, c_v)[0]
                if cfg.fusion == "amfbp":
                    z = torch.cat([z, self.trunks(audio, video)], -1)
            else:
                z = call_op(getattr(self, self.op), c_a, c_v)
            logits = self.classify(self.classifier, output_scale(cfg, self.op) * z)
        return full_precision(logits)

    def trunks(self, audio: Attended, video: Attended) -> torch.Tensor:
        """Mean over trunks with data of AG-FBP of the trunk-pooled streams [B, o]."""
        n = self.cfg.num_trunks
        audio_masks, video_masks = trunk_masks(audio, n), trunk_masks(video, n)
        z = self.trunk_agfbp(attention_pool(audio, audio_masks),
                             attention_pool(video, video_masks))[0]
        has_data = audio_masks.any(-1) | video_masks.any(-1)  # [B, N]
        count = has_data.sum(1, keepdim=True).to(z.dtype)
        z = torch.where(has_data[..., None], full_precision(z), 0).sum(1)
        return z / count.clamp(min=1)


class AVModelTwin(nn.Module):
    """The twin of AVModel: batch of torch tensors (`to_torch`) -> float logits [B, classes]."""

    def __init__(self, cfg: ml_collections.ConfigDict):
        super().__init__()
        self.cfg = cfg
        self.audio = AudioStream(cfg) if uses_audio(cfg) else None
        self.video = VideoStream(cfg.video) if uses_video(cfg) else None
        self.fusion = FusionHead(cfg, self.audio.fcn.channels if self.audio else 0,
                                 self.video.dim if self.video else 0)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        dtype = next(self.parameters()).dtype  # float32, or float64 for the reference
        audio = video = None
        if self.audio is not None:
            audio = self.audio(batch["audio"], batch["audio_len"], dtype)
        if self.video is not None:
            video = self.video(batch["frames"], batch["frame_len"], batch["frame_mask"], dtype)
        return self.fusion(audio, video)


def to_torch(batch: dict[str, np.ndarray], device: str | torch.device = "cpu"
             ) -> dict[str, torch.Tensor]:
    """Our batch (numpy arrays, data contract) as torch tensors on `device`."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


# --- parameters ----------------------------------------------------------------------------


def _layout(twin: nn.Module, owner: str, name: str) -> tuple[str, object, object]:
    """(Flax leaf name, Flax -> torch, torch -> Flax) of tensor `name` of submodule `owner`."""
    def same(a):
        return a

    module = twin.get_submodule(owner)
    parent = twin.get_submodule(owner.rpartition(".")[0])
    if isinstance(parent, TFNFusion) and owner.endswith("post_fusion_layer_1") and name == "weight":
        # Flax [m+1, n+1, out] (the outer product's two axes), torch [out, (m+1)(n+1)]
        return "kernel", (lambda a: np.moveaxis(a, -1, 0).reshape(a.shape[-1], -1)), (
            lambda t: t.reshape(t.shape[0], *parent.fused_shape).permute(1, 2, 0))
    if isinstance(module, nn.Linear) and name == "weight":  # Flax [in, out], torch [out, in]
        return "kernel", (lambda a: a.T), (lambda a: a.T)
    if isinstance(module, nn.Bilinear) and name == "weight":  # [in1, in2, out], [out, in1, in2]
        return "kernel", (lambda a: np.moveaxis(a, -1, 0)), (lambda t: t.permute(1, 2, 0))
    if isinstance(module, nn.Conv2d) and name == "weight":  # [kh, kw, in, out], [out, in, kh, kw]
        return "kernel", (lambda a: a.transpose(3, 2, 0, 1)), (lambda a: a.permute(2, 3, 1, 0))
    if isinstance(module, nn.LayerNorm) and name == "weight":
        return "scale", same, same
    if isinstance(module, TorchMCB):  # buffers h_x, s_x: our parameter sketch_x {h, s}, float32
        return f"sketch_{name[-1]}/{name[0]}", same, (lambda t: t.to(torch.float32))
    return name, same, same  # biases; FBP, LMF and FrozenBatchNorm keep Flax's names and layout


def _flat(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        out.update(_flat(v, path) if isinstance(v, dict) else {path: np.asarray(v)})
    return out


def _scope(owner: str) -> str:
    """A torch module path as a Flax scope: "fusion.block.merge_linears0.3" (an nn.ModuleList
    item) is "fusion/block/merge_linears0_3"."""
    parts: list[str] = []
    for part in owner.split(".") if owner else []:
        if part.isdigit():
            parts[-1] += f"_{part}"
        else:
            parts.append(part)
    return "/".join(parts)


def _pairs(twin: nn.Module):
    """(Flax path, torch tensor, Flax -> torch, torch -> Flax) for every twin parameter, and the
    buffers ours keeps as (fixed) parameters: MCB's count sketches. BLOCK's empty last chunk
    (a zero-size layer) has no Flax counterpart."""
    fixed = [(name, b) for name, b in twin.named_buffers()
             if isinstance(twin.get_submodule(name.rpartition(".")[0]), TorchMCB)]
    for name, tensor in [*twin.named_parameters(), *fixed]:
        if not tensor.numel():
            continue
        owner, leaf = name.rpartition(".")[::2]
        flax_leaf, to_torch_, to_flax = _layout(twin, owner, leaf)
        yield f"{_scope(owner)}/{flax_leaf}", tensor, to_torch_, to_flax


@torch.no_grad()
def load_params(twin: nn.Module, params: dict) -> None:
    """Copies our Flax parameters (nested dict of arrays) into the twin, in its dtype.

    Raises ValueError naming a parameter that is missing, left over or of another shape.
    """
    flat = _flat(params)
    used = set()
    for path, param, to_torch_, _ in _pairs(twin):
        if path not in flat:
            raise ValueError(f"params: no Flax parameter {path} for the twin")
        value = to_torch_(np.asarray(flat[path]))
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"params: {path} has shape {value.shape}, the twin {param.shape}")
        param.copy_(torch.from_numpy(np.array(value)))  # a writable, contiguous copy
        used.add(path)
    left = sorted(p for p in flat if p not in used and not p.startswith(UNUSED))
    if left:
        raise ValueError(f"params: the twin has no place for {left}")


def flax_layout(twin: nn.Module, grads: bool = False) -> dict:
    """The twin's parameters (or their .grad, with `grads`) as a nested dict of numpy arrays
    (copies) in our Flax layout; parameters without a gradient are left out when `grads`."""
    out: dict = {}
    for path, param, _, to_flax in _pairs(twin):
        value = param.grad if grads else param
        if value is None:
            continue
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = np.array(to_flax(value.detach().cpu()))  # a copy, not a view
    return out
