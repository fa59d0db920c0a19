"""PyTorch twins of MFH and MCB as block.bootstrap.pytorch defines them, transcribed from
Cadene/block.bootstrap.pytorch, commit e938e9e: block/models/networks/fusions/fusions.py
(classes MFH, MCB) and compactbilinearpooling.py (CountSketch, CompactBilinearPoolingFn).

The reference's forward passes and its hand-written compact-bilinear backward are kept; the
removed torch.rfft / torch.irfft (real/imaginary in a trailing axis) become torch.fft.rfft /
irfft on complex tensors (the same unnormalised forward and 1/n inverse). Dropout goes through
`drop`, which tests may replace to replay our masks. `load_params` copies our Flax parameters
in; `forward_backward` returns the output and the gradients in our layout.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class _Dropping(nn.Module):
    """Dropout as F.dropout in training mode, through one method tests can replace."""

    def drop(self, v: torch.Tensor, p: float) -> torch.Tensor:
        return F.dropout(v, p=p, training=self.training)


def _activate(v: torch.Tensor, name: str | None) -> torch.Tensor:
    return getattr(F, name)(v) if name else v


class TorchMFH(_Dropping):
    """block.bootstrap's MFH: two MFB stages, stage 2 times stage 1's dropped-out product."""

    def __init__(self, input_dims, output_dim, mm_dim=1200, factor=2, activ_input="relu",
                 activ_output="relu", normalize=False, dropout_input=0.0, dropout_pre_lin=0.0,
                 dropout_output=0.0):
        super().__init__()
        self.mm_dim, self.factor = mm_dim, factor
        self.activ_input, self.activ_output, self.normalize = activ_input, activ_output, normalize
        self.dropout_input, self.dropout_pre_lin = dropout_input, dropout_pre_lin
        self.dropout_output = dropout_output
        width = mm_dim * factor
        self.linear0_0 = nn.Linear(input_dims[0], width)
        self.linear1_0 = nn.Linear(input_dims[1], width)
        self.linear0_1 = nn.Linear(input_dims[0], width)
        self.linear1_1 = nn.Linear(input_dims[1], width)
        self.linear_out = nn.Linear(2 * mm_dim, output_dim)

    def _projected(self, layer, v):
        v = _activate(layer(v), self.activ_input)
        return self.drop(v, self.dropout_input) if self.dropout_input > 0 else v

    def _pooled(self, p):
        z = p.view(p.size(0), self.mm_dim, self.factor).sum(2)
        if self.normalize:
            z = torch.sqrt(F.relu(z)) - torch.sqrt(F.relu(-z))
            z = F.normalize(z, p=2)
        return z

    def forward(self, x):
        skip = self._projected(self.linear0_0, x[0]) * self._projected(self.linear1_0, x[1])
        if self.dropout_pre_lin > 0:
            skip = self.drop(skip, self.dropout_pre_lin)
        z_0 = self._pooled(skip)
        p_1 = (self._projected(self.linear0_1, x[0]) * self._projected(self.linear1_1, x[1])
               * skip)
        if self.dropout_pre_lin > 0:
            p_1 = self.drop(p_1, self.dropout_pre_lin)
        z_1 = self._pooled(p_1)
        z = _activate(self.linear_out(torch.cat([z_0, z_1], 1)), self.activ_output)
        return self.drop(z, self.dropout_output) if self.dropout_output > 0 else z


def _count_sketch(v, h, s, d):
    """out[..., h_i] += s_i v[..., i] (scatter-add)."""
    out = v.new_zeros(*v.shape[:-1], d)
    return out.scatter_add_(-1, h.expand(v.shape), v * s)


def _count_sketch_grad(g, h, s, size):
    """The count sketch's transpose: s_i g[..., h_i]."""
    return g.gather(-1, h.expand(*g.shape[:-1], size)) * s


class _CompactBilinear(torch.autograd.Function):
    """irfft(rfft(sketch x) * rfft(sketch y)); backward as the reference writes it: each
    sketch's gradient is irfft(rfft(g) * conj(rfft(other sketch))), sketches recomputed."""

    @staticmethod
    def forward(ctx, x, y, h_x, s_x, h_y, s_y, d):
        ctx.save_for_backward(x, y, h_x, s_x, h_y, s_y)
        ctx.d = d
        f_x = torch.fft.rfft(_count_sketch(x, h_x, s_x, d))
        f_y = torch.fft.rfft(_count_sketch(y, h_y, s_y, d))
        return torch.fft.irfft(f_x * f_y, n=d)

    @staticmethod
    def backward(ctx, g):
        x, y, h_x, s_x, h_y, s_y = ctx.saved_tensors
        d = ctx.d
        f_g = torch.fft.rfft(g.contiguous())
        f_x = torch.fft.rfft(_count_sketch(x, h_x, s_x, d))
        f_y = torch.fft.rfft(_count_sketch(y, h_y, s_y, d))
        g_x = _count_sketch_grad(torch.fft.irfft(f_g * f_y.conj(), n=d), h_x, s_x, x.shape[-1])
        g_y = _count_sketch_grad(torch.fft.irfft(f_g * f_x.conj(), n=d), h_y, s_y, y.shape[-1])
        return g_x, g_y, None, None, None, None, None


class TorchMCB(_Dropping):
    """block.bootstrap's MCB: compact bilinear pooling, then linear_out, activation, dropout.

    The count-sketch hashes are buffers (h_x, s_x, h_y, s_y), drawn like the reference's
    CountSketch (h uniform in [0, mm_dim), s = +-1) and replaced by `load_params`.
    """

    def __init__(self, input_dims, output_dim, mm_dim=16000, activ_output="relu",
                 dropout_output=0.0):
        super().__init__()
        self.mm_dim, self.activ_output, self.dropout_output = mm_dim, activ_output, dropout_output
        for side, size in zip("xy", input_dims, strict=True):
            self.register_buffer(f"h_{side}", torch.randint(0, mm_dim, (size,)))
            self.register_buffer(f"s_{side}", 2.0 * torch.randint(0, 2, (size,)) - 1.0)
        self.linear_out = nn.Linear(mm_dim, output_dim)

    def forward(self, x):
        z = _CompactBilinear.apply(x[0], x[1], self.h_x, self.s_x, self.h_y, self.s_y,
                                   self.mm_dim)
        z = _activate(self.linear_out(z), self.activ_output)
        return self.drop(z, self.dropout_output) if self.dropout_output > 0 else z


def load_params(module: nn.Module, params) -> None:
    """Copies our Flax params (torch_dense layers {kernel (in, out), bias}, MCB sketches
    {h, s}) into the twin, in the twin's dtype."""
    with torch.no_grad():
        for name, leaves in params.items():
            if name.startswith("sketch_"):
                side = name[-1]
                getattr(module, f"h_{side}").copy_(torch.tensor(np.asarray(leaves["h"]),
                                                                dtype=torch.int64))
                getattr(module, f"s_{side}").copy_(torch.tensor(np.asarray(leaves["s"])))
            else:
                layer = getattr(module, name)
                layer.weight.copy_(torch.tensor(np.asarray(leaves["kernel"]).T))
                layer.bias.copy_(torch.tensor(np.asarray(leaves["bias"])))


def forward_backward(module: nn.Module, x: np.ndarray, y: np.ndarray, cotangent: np.ndarray
                     ) -> dict:
    """The twin's output and the gradients of <output, cotangent>, in our layout:
    {"out", "x", "y", "params": {layer: {"kernel", "bias"}}} (numpy, the twin's dtype)."""
    dtype = next(module.parameters()).dtype
    xt, yt = (torch.tensor(v, dtype=dtype, requires_grad=True) for v in (x, y))
    module.zero_grad()
    out = module([xt, yt])
    out.backward(torch.tensor(cotangent, dtype=dtype))
    return {"out": out.detach().numpy(), "x": xt.grad.numpy(), "y": yt.grad.numpy(),
            "params": grads_as_flax(module)}


def grads_as_flax(module: nn.Module) -> dict:
    """The gradients of the twin's Linear layers in our layout, {layer: {"kernel", "bias"}}
    (numpy on the host, the twin's dtype)."""
    as_np = lambda t: t.detach().cpu().numpy()
    return {name: {"kernel": as_np(layer.weight.grad).T, "bias": as_np(layer.bias.grad)}
            for name, layer in module.named_children() if isinstance(layer, nn.Linear)}
