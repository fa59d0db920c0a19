"""PyTorch references for avfbp_jax.ops.tensor_fusion: the fusion parts of TFN and LMF.

Transcribed (rewritten, not copied) for two modalities from the authors' code:
  Justin1904/TensorFusionNetworks @ ef0e78b5583159de9b74ef2cdef6031bd9f94b37, model.py, TFN
  (ones prepended, batched outer product by bmm, flattened, post_fusion_dropout,
  post_fusion_layer_1/2/3 with ReLU, ReLU);
  Justin1904/Low-rank-Multimodal-Fusion @ ea4755124d19bddf7941695215e98f16fbb1fff9, model.py, LMF
  (audio_factor/video_factor over [1; h], product, fusion_weights over the rank, fusion_bias).
x is their audio, y their video. As in our port, TFN's final sigmoid * 6 - 3 and LMF's
use_softmax are left out (both return raw outputs); everything else is as there, including the
materialised outer product (which is what our einsum form is checked against).

`load_params` copies our Flax parameters into a twin, `grads_as_flax` reads its gradients back in
our layout, `forward_backward` runs both directions in one dtype.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _with_one(h: torch.Tensor) -> torch.Tensor:
    """[1; h] for h (batch, d), the constant first as in the reference."""
    return torch.cat([torch.ones(h.shape[0], 1, dtype=h.dtype, device=h.device), h], dim=1)


class TFNFusion(nn.Module):
    """TFN after its subnetworks, for x (B, m), y (B, n)."""

    def __init__(self, x_dim: int, y_dim: int, post_fusion_dim: int, output_dim: int,
                 post_fusion_prob: float):
        super().__init__()
        self.post_fusion_prob = post_fusion_prob
        self.fused_shape = (x_dim + 1, y_dim + 1)  # the outer product's axes, before flattening
        self.post_fusion_dropout = nn.Dropout(p=post_fusion_prob)
        self.post_fusion_layer_1 = nn.Linear((x_dim + 1) * (y_dim + 1), post_fusion_dim)
        self.post_fusion_layer_2 = nn.Linear(post_fusion_dim, post_fusion_dim)
        self.post_fusion_layer_3 = nn.Linear(post_fusion_dim, output_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None = None
                ) -> torch.Tensor:
        """`keep` (B, m+1, n+1), when given, is the dropout mask used in place of torch's own
        draw (scaled by 1 / (1 - p) as nn.Dropout does), to compare with a given JAX mask."""
        batch = x.shape[0]
        fused = torch.bmm(_with_one(x).unsqueeze(2), _with_one(y).unsqueeze(1)).view(batch, -1)
        if keep is None:
            dropped = self.post_fusion_dropout(fused)
        else:
            dropped = fused * keep.reshape(batch, -1).to(fused.dtype) / (1 - self.post_fusion_prob)
        h1 = F.relu(self.post_fusion_layer_1(dropped))
        h2 = F.relu(self.post_fusion_layer_2(h1))
        return self.post_fusion_layer_3(h2)


class LMFFusion(nn.Module):
    """LMF after its subnetworks, for x (B, m), y (B, n). Initialisation is the reference's
    (xavier_normal factors and weights, zero bias); tests overwrite it with ours."""

    def __init__(self, x_dim: int, y_dim: int, output_dim: int, rank: int):
        super().__init__()
        self.output_dim = output_dim
        self.x_factor = nn.Parameter(torch.empty(rank, x_dim + 1, output_dim))
        self.y_factor = nn.Parameter(torch.empty(rank, y_dim + 1, output_dim))
        self.fusion_weights = nn.Parameter(torch.empty(1, rank))
        self.fusion_bias = nn.Parameter(torch.zeros(1, output_dim))
        for p in (self.x_factor, self.y_factor, self.fusion_weights):
            nn.init.xavier_normal_(p)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fusion_x = torch.matmul(_with_one(x), self.x_factor)  # (rank, B, o)
        fusion_y = torch.matmul(_with_one(y), self.y_factor)
        fusion_zy = fusion_x * fusion_y
        out = torch.matmul(self.fusion_weights, fusion_zy.permute(1, 0, 2)).squeeze()
        return (out + self.fusion_bias).view(-1, self.output_dim)


def _to_torch(name: str, value: np.ndarray, shape: torch.Size) -> np.ndarray:
    """Our parameter value in the twin's layout (see `_to_flax` for the inverse)."""
    if name == "post_fusion_layer_1.weight":  # (m+1, n+1, k) -> (k, (m+1)(n+1))
        return np.moveaxis(value, -1, 0).reshape(shape)
    if name.endswith(".weight"):
        return value.T
    return value


def _to_flax(name: str, value: np.ndarray, shape: tuple) -> np.ndarray:
    if name == "post_fusion_layer_1.weight":
        return np.moveaxis(value.reshape(shape[-1], *shape[:-1]), 0, -1)
    if name.endswith(".weight"):
        return value.T
    return value


def _flax_key(name: str) -> tuple[str, ...]:
    """Twin parameter name -> Flax path: "post_fusion_layer_2.weight" is
    ("post_fusion_layer_2", "kernel"); LMF's parameters keep their names."""
    if "." not in name:
        return (name,)
    mod, leaf = name.split(".")
    return mod, {"weight": "kernel", "bias": "bias"}[leaf]


def _leaf(tree, key: tuple[str, ...]):
    for k in key:
        tree = tree[k]
    return tree


def load_params(module: nn.Module, flax_params) -> None:
    """Copies our Flax params into the twin, in its dtype; every parameter on both sides used."""
    used = set()
    with torch.no_grad():
        for name, p in module.named_parameters():
            key = _flax_key(name)
            value = _to_torch(name, np.asarray(_leaf(flax_params, key), np.float64), p.shape)
            assert value.shape == tuple(p.shape), f"{name}: {value.shape} vs {tuple(p.shape)}"
            p.copy_(torch.from_numpy(np.ascontiguousarray(value)))
            used.add(key)
    ours = {path for path, _ in _flax_paths(flax_params)}
    assert ours == used, f"Flax params without a twin: {sorted(ours - used)}"


def _flax_paths(tree, prefix=()):
    for k, v in tree.items():
        if hasattr(v, "items"):
            yield from _flax_paths(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def grads_as_flax(module: nn.Module, flax_params) -> dict:
    """The twin's parameter gradients (after backward) in the layout of `flax_params`, float64."""
    out: dict = {}
    for name, p in module.named_parameters():
        key = _flax_key(name)
        shape = np.shape(_leaf(flax_params, key))
        node = out
        for k in key[:-1]:
            node = node.setdefault(k, {})
        node[key[-1]] = _to_flax(name, p.grad.detach().double().cpu().numpy(), shape)
    return out


def forward_backward(module: nn.Module, flax_params, x: np.ndarray, y: np.ndarray,
                     cotangent: np.ndarray, dtype: torch.dtype, keep: np.ndarray | None = None):
    """Runs the twin in `dtype` on our params (eval mode unless a TFN `keep` mask is given):
    returns the output and the gradients of sum(output * cotangent) wrt x, y and the params
    (our layout), all float64 numpy."""
    module = module.to(dtype).eval()
    load_params(module, flax_params)
    module.zero_grad(set_to_none=True)
    tx, ty = (torch.tensor(np.asarray(a), dtype=dtype, requires_grad=True) for a in (x, y))
    extra = {} if keep is None else {"keep": torch.from_numpy(np.array(keep))}
    out = module(tx, ty, **extra)
    (out * torch.tensor(np.asarray(cotangent), dtype=dtype)).sum().backward()
    as_np = lambda t: t.detach().double().numpy()
    return as_np(out), as_np(tx.grad), as_np(ty.grad), grads_as_flax(module, flax_params)
