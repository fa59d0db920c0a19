"""The members' PyTorch reference transcriptions, loaded with our parameters behind one interface
(`Twin`): FBP's twin (tools/fbp_bench/torch_twin.py), block.bootstrap's fusions
(tools/torch_twins/mfh_mcb.py) and TFN / LMF (tools/torch_twins/tensor_fusion.py).

A builder takes (torch, settings, m, n, params, device): the member's settings as in the model
config, the input sizes, our Flax parameters (float32) and the torch device. torch and the twin
modules are imported inside the builders: torch is an optional dependency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np


@dataclasses.dataclass
class Twin:
    """call(x, y): the twin's output; parameters: the tensors it computes gradients for;
    grads(): those gradients in our parameters' layout (nested dicts of numpy arrays)."""

    call: Callable[[Any, Any], Any]
    parameters: list[Any]
    grads: Callable[[], dict[str, Any]]


def fbp(torch, s: dict[str, Any], m: int, n: int, params: Any, device: str) -> Twin:
    """tools/fbp_bench's twin of ops.fbp on our w_x, w_y, b_x, b_y."""
    from tools.fbp_bench.torch_twin import torch_twin

    del m, n
    f = torch_twin(torch)
    p = {name: torch.tensor(np.asarray(v), device=device, requires_grad=True)
         for name, v in params.items()}
    return Twin(lambda x, y: f(x, y, p["w_x"], p["w_y"], p["b_x"], p["b_y"], s["k"]),
                list(p.values()),
                lambda: {name: t.grad.detach().cpu().numpy() for name, t in p.items()})


def block_style(cls_name: str, float_inputs: bool = False) -> Callable[..., Twin]:
    """A block.bootstrap-style twin (tools/torch_twins/mfh_mcb.py: constructor (input_dims,
    **settings), forward([x, y])). float_inputs: the twin is fed float32 copies of the inputs
    (MCB: its count sketches and FFTs run in float32, as ours do)."""

    def build(torch, s: dict[str, Any], m: int, n: int, params: Any, device: str) -> Twin:
        from tools.torch_twins import mfh_mcb

        module = getattr(mfh_mcb, cls_name)([m, n], **s).eval()
        mfh_mcb.load_params(module, params)
        module.to(device)
        cast = (lambda v: v.float()) if float_inputs else (lambda v: v)
        return Twin(lambda x, y: module([cast(x), cast(y)]), list(module.parameters()),
                    lambda: mfh_mcb.linear_grads(module))

    return build


def tensor_style(make: Callable[..., Any]) -> Callable[..., Twin]:
    """A twin of tools/torch_twins/tensor_fusion.py; make(tensor_fusion, settings, m, n) builds
    its module (forward(x, y))."""

    def build(torch, s: dict[str, Any], m: int, n: int, params: Any, device: str) -> Twin:
        from tools.torch_twins import tensor_fusion

        module = make(tensor_fusion, s, m, n).eval()
        tensor_fusion.load_params(module, params)
        module.to(device)
        return Twin(module, list(module.parameters()),
                    lambda: tensor_fusion.grads_as_flax(module, params))

    return build
