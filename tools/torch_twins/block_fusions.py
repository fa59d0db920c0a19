"""PyTorch references for avfbp_jax.ops.mlb and avfbp_jax.ops.tucker: MLB, Tucker, MUTAN, BLOCK.

Transcribed (rewritten, not copied) from block.bootstrap.pytorch, Cadene et al.,
block/models/networks/fusions/fusions.py at commit e938e9e (file unchanged since 769a638):
classes MLB, Tucker, Mutan, Block and the helpers get_sizes_list, get_chunks. Same layers,
parameter names, initialisation (torch.nn.Linear / nn.Bilinear defaults), dropout placement and
normalisation; inputs are a pair (x0, x1) as there. Tucker's `shared`, a no-op there, is left out.

`load_params` copies our Flax parameters into a twin, `grads_as_flax` reads its gradients back in
our layout: torch "merge_linears0.3.weight" is Flax ("merge_linears0_3", "kernel"), and a torch
weight's output axis (first) is our kernel's last axis.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def get_sizes_list(dim: int, chunks: int) -> list[int]:
    """Chunk sizes of block.bootstrap's get_sizes_list: ceil(dim / chunks) each, the last one
    cut to make the sum dim; if that leaves it negative, it takes its neighbour's size and the
    surplus is taken back one unit per chunk from the end. The last size can end at 0 (e.g.
    dim 10, chunks 6); the reference asserts sizes > 0 only in the negative case."""
    size = -(-dim // chunks)
    sizes = [size] * chunks
    sizes[-1] -= size * chunks - dim
    if sizes[-1] < 0:
        surplus = sizes[-2] - sizes[-1]
        sizes[-1] = sizes[-2]
        for j in range(surplus):
            sizes[-1 - j] -= 1
        assert min(sizes) > 0
    assert sum(sizes) == dim
    return sizes


def split_columns(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Consecutive column blocks of x (B, sum(sizes)) of the given widths (get_chunks)."""
    return list(torch.split(x, sizes, dim=1))


def signed_sqrt_normalize(z: torch.Tensor) -> torch.Tensor:
    """sqrt(relu(z)) - sqrt(relu(-z)), then F.normalize over the last axis, as the reference."""
    z = torch.sqrt(F.relu(z)) - torch.sqrt(F.relu(-z))
    return F.normalize(z, p=2)


def _drop(z: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    return F.dropout(z, p=p, training=training) if p > 0 else z


class MLB(nn.Module):
    """relu(W_o norm(act(W_0 x0) * act(W_1 x1))), activations named as torch.nn.functional's."""

    def __init__(self, input_dims, output_dim, mm_dim=1200, activ_input="relu",
                 activ_output="relu", normalize=False, dropout_input=0.0, dropout_pre_lin=0.0,
                 dropout_output=0.0):
        super().__init__()
        self.activ_input, self.activ_output, self.normalize = activ_input, activ_output, normalize
        self.rates = (dropout_input, dropout_pre_lin, dropout_output)
        self.linear0 = nn.Linear(input_dims[0], mm_dim)
        self.linear1 = nn.Linear(input_dims[1], mm_dim)
        self.linear_out = nn.Linear(mm_dim, output_dim)

    def forward(self, x):
        p_in, p_pre, p_out = self.rates
        x0, x1 = self.linear0(x[0]), self.linear1(x[1])
        if self.activ_input:
            x0 = getattr(F, self.activ_input)(x0)
            x1 = getattr(F, self.activ_input)(x1)
        z = _drop(x0, p_in, self.training) * _drop(x1, p_in, self.training)
        if self.normalize:
            z = signed_sqrt_normalize(z)
        z = self.linear_out(_drop(z, p_pre, self.training))
        if self.activ_output:
            z = getattr(F, self.activ_output)(z)
        return _drop(z, p_out, self.training)


class _TuckerFrame(nn.Module):
    """What the three share: input projections (linear1 is linear0 when shared), dropout on
    both, a core, then dropout, linear_out, dropout."""

    def __init__(self, input_dims, output_dim, mm_dim, shared, dropout_input, dropout_pre_lin,
                 dropout_output):
        super().__init__()
        self.rates = (dropout_input, dropout_pre_lin, dropout_output)
        self.linear0 = nn.Linear(input_dims[0], mm_dim)
        self.linear1 = self.linear0 if shared else nn.Linear(input_dims[1], mm_dim)
        self.linear_out = nn.Linear(mm_dim, output_dim)

    def forward(self, x):
        p_in, p_pre, p_out = self.rates
        x0 = _drop(self.linear0(x[0]), p_in, self.training)
        x1 = _drop(self.linear1(x[1]), p_in, self.training)
        z = _drop(self.core(x0, x1), p_pre, self.training)
        return _drop(self.linear_out(z), p_out, self.training)


class Tucker(_TuckerFrame):
    """Full bilinear core nn.Bilinear(mm_dim, mm_dim, mm_dim), optional normalisation."""

    def __init__(self, input_dims, output_dim, mm_dim=1600, normalize=False, dropout_input=0.0,
                 dropout_pre_lin=0.0, dropout_output=0.0):
        super().__init__(input_dims, output_dim, mm_dim, False, dropout_input, dropout_pre_lin,
                         dropout_output)
        self.normalize = normalize
        self.bilinear = nn.Bilinear(mm_dim, mm_dim, mm_dim)

    def core(self, x0, x1):
        z = self.bilinear(x0, x1)
        return signed_sqrt_normalize(z) if self.normalize else z


def _rank_sum(m0: torch.Tensor, m1: torch.Tensor, rank: int) -> torch.Tensor:
    """(m0 * m1) viewed as (B, rank, d) and summed over rank: z_j = sum_r p[r * d + j]."""
    return (m0 * m1).view(m0.shape[0], rank, -1).sum(1)


class Mutan(_TuckerFrame):
    """Rank-`rank` core: sum over rank of merge_linear0(x0) * merge_linear1(x1)."""

    def __init__(self, input_dims, output_dim, mm_dim=1600, rank=15, shared=False,
                 normalize=False, dropout_input=0.0, dropout_pre_lin=0.0, dropout_output=0.0):
        super().__init__(input_dims, output_dim, mm_dim, shared, dropout_input, dropout_pre_lin,
                         dropout_output)
        self.rank, self.normalize = rank, normalize
        self.merge_linear0 = nn.Linear(mm_dim, mm_dim * rank)
        self.merge_linear1 = (self.merge_linear0 if shared
                              else nn.Linear(mm_dim, mm_dim * rank))

    def core(self, x0, x1):
        z = _rank_sum(self.merge_linear0(x0), self.merge_linear1(x1), self.rank)
        return signed_sqrt_normalize(z) if self.normalize else z


class Block(_TuckerFrame):
    """Block-diagonal core: a MUTAN-style rank-`rank` core on each of `chunks` column blocks,
    normalised per block ("before_cat") or after concatenation ("after_cat")."""

    def __init__(self, input_dims, output_dim, mm_dim=1600, chunks=20, rank=15, shared=False,
                 dropout_input=0.0, dropout_pre_lin=0.0, dropout_output=0.0,
                 pos_norm="before_cat"):
        super().__init__(input_dims, output_dim, mm_dim, shared, dropout_input, dropout_pre_lin,
                         dropout_output)
        assert pos_norm in ("before_cat", "after_cat")
        self.rank, self.pos_norm = rank, pos_norm
        self.sizes_list = get_sizes_list(mm_dim, chunks)
        self.merge_linears0 = nn.ModuleList(nn.Linear(s, s * rank) for s in self.sizes_list)
        self.merge_linears1 = (self.merge_linears0 if shared else
                               nn.ModuleList(nn.Linear(s, s * rank) for s in self.sizes_list))

    def core(self, x0, x1):
        zs = []
        for c0, c1, lin0, lin1 in zip(split_columns(x0, self.sizes_list),
                                      split_columns(x1, self.sizes_list),
                                      self.merge_linears0, self.merge_linears1, strict=True):
            z = _rank_sum(lin0(c0), lin1(c1), self.rank)
            zs.append(signed_sqrt_normalize(z) if self.pos_norm == "before_cat" else z)
        z = torch.cat(zs, 1)
        return signed_sqrt_normalize(z) if self.pos_norm == "after_cat" else z


def _flax_key(torch_name: str) -> tuple[str, str]:
    """"merge_linears0.3.weight" -> ("merge_linears0_3", "kernel")."""
    *module, leaf = torch_name.split(".")
    return "_".join(module), {"weight": "kernel", "bias": "bias"}[leaf]


def _named(module: nn.Module):
    """The twin's parameters that have a Flax counterpart (BLOCK's empty chunk has none)."""
    return [(name, p) for name, p in module.named_parameters() if p.numel()]


def load_params(module: nn.Module, flax_params) -> None:
    """Copies Flax params ({"linear0": {"kernel", "bias"}, ...}) into the twin, in its dtype.

    A torch weight (out, in...) is our kernel (in..., out). Every twin parameter must be found
    and every Flax parameter used.
    """
    used = set()
    with torch.no_grad():
        for name, p in _named(module):
            mod, leaf = _flax_key(name)
            value = np.asarray(flax_params[mod][leaf], np.float64)
            if leaf == "kernel":
                value = np.moveaxis(value, -1, 0)
            assert value.shape == tuple(p.shape), f"{name}: {value.shape} vs {tuple(p.shape)}"
            p.copy_(torch.from_numpy(value))
            used.add((mod, leaf))
    ours = {(mod, leaf) for mod, leaves in flax_params.items() for leaf in leaves}
    assert ours == used, f"Flax params without a twin: {sorted(ours - used)}"


def grads_as_flax(module: nn.Module) -> dict[str, dict[str, np.ndarray]]:
    """The twin's parameter gradients (after backward) in our Flax layout, as float64 numpy."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, p in _named(module):
        mod, leaf = _flax_key(name)
        g = p.grad.detach().double().cpu().numpy()
        out.setdefault(mod, {})[leaf] = np.moveaxis(g, 0, -1) if leaf == "kernel" else g
    return out


def forward_backward(module: nn.Module, flax_params, x: np.ndarray, y: np.ndarray,
                     cotangent: np.ndarray, dtype: torch.dtype):
    """Runs the twin in `dtype` (eval mode) on our params: returns the output and the gradients
    of sum(output * cotangent) wrt x, y and the params (Flax layout), all float64 numpy."""
    module = module.to(dtype).eval()
    load_params(module, flax_params)
    module.zero_grad(set_to_none=True)
    tx, ty = (torch.tensor(np.asarray(a), dtype=dtype, requires_grad=True) for a in (x, y))
    out = module((tx, ty))
    (out * torch.tensor(np.asarray(cotangent), dtype=dtype)).sum().backward()
    as_np = lambda t: t.detach().double().numpy()
    return as_np(out), as_np(tx.grad), as_np(ty.grad), grads_as_flax(module)
