"""PyTorch twin of avfbp_jax.ops.fbp: the same formula and floors, written as a torch user would.

    p = (x W_x + b_x) * (y W_y + b_y)       in float32 (float64 stays float64)
    p = dropout(p)                          training only (F.dropout: mask / (1 - rate))
    z_j = sum_{r<k} p[j*k + r]
    z = sign(z) sqrt(|z|)                   derivative evaluated at max(|z|, SQRT_GRAD_FLOOR)
    z = z / max(||z||_2, NORM_FLOOR)

The projections run in the inputs' dtype (bfloat16 under autocast), the rest in float32, and the
result comes back in x's dtype, as in the JAX kernel. Only the dropout masks differ (torch's
generator instead of jax.random).
"""

import torch
import torch.nn.functional as F

from avfbp_jax.ops.bilinear_common import NORM_FLOOR, SQRT_GRAD_FLOOR


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or float64 when it is float64 (the float64 reference keeps its precision)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class SignedSqrt(torch.autograd.Function):
    """sign(z) sqrt(|z|) with the kernel's finite derivative at 0."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return torch.sign(z) * torch.sqrt(torch.abs(z))

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * 0.5 * torch.rsqrt(torch.clamp(torch.abs(z), min=SQRT_GRAD_FLOOR))


def fbp(x: torch.Tensor, y: torch.Tensor, w_x: torch.Tensor, w_y: torch.Tensor,
        b_x: torch.Tensor, b_y: torch.Tensor, k: int, dropout: float = 0.0,
        training: bool = False) -> torch.Tensor:
    """FBP of x [..., m] and y [..., n] into [..., o], o = w_x.shape[1] // k (see module doc)."""
    p = full_precision(x @ w_x + b_x) * full_precision(y @ w_y + b_y)
    if training and dropout > 0:
        p = F.dropout(p, dropout, training=True)
    z = SignedSqrt.apply(p.reshape(*p.shape[:-1], -1, k).sum(-1))
    sq = (z * z).sum(-1, keepdim=True)
    return (z * torch.rsqrt(torch.clamp(sq, min=NORM_FLOOR * NORM_FLOOR))).to(x.dtype)
