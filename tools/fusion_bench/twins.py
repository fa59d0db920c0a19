"""The members' PyTorch reference transcriptions, loaded with our parameters behind one interface
(`Twin`): tools/torch_twins/fbp.py (FBP), mfh_mcb.py and block_fusions.py (block.bootstrap's
fusions) and tensor_fusion.py (TFN, LMF).

A builder takes (torch, settings, m, n, params, device, dtype): the member's settings as in the
model config, the input sizes, our Flax parameters (float32 numpy), the torch device and the
parameters' dtype (float64 for the reference, float32 for the timed twin; bfloat16 is autocast).
torch and the twin modules are imported inside the builders: torch is an optional dependency.
"""

from __future__ import annotations

import dataclasses
import importlib
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


def fbp(torch, s: dict[str, Any], m: int, n: int, params: Any, device: str, dtype) -> Twin:
    """tools/torch_twins/fbp.py's twin of ops.fbp on our w_x, w_y, b_x, b_y."""
    from tools.torch_twins.fbp import fbp as f

    del m, n
    p = {name: torch.tensor(np.asarray(v), device=device, dtype=dtype, requires_grad=True)
         for name, v in params.items()}
    return Twin(lambda x, y: f(x, y, p["w_x"], p["w_y"], p["b_x"], p["b_y"], s["k"]),
                list(p.values()),
                lambda: {name: t.grad.detach().cpu().numpy() for name, t in p.items()})


def _module_twin(module, load: Callable[[Any], None], grads: Callable[[Any], dict],
                 call: Callable[..., Any], device: str, dtype) -> Twin:
    """A twin nn.Module in dtype on device: load(module) copies our parameters in, grads(module)
    reads its gradients in our layout, call(module, x, y) runs it."""
    module = module.eval().to(dtype)
    load(module)
    module.to(device)
    return Twin(lambda x, y: call(module, x, y), list(module.parameters()),
                lambda: grads(module))


def block_style(twin_module: str, cls_name: str, float_inputs: bool = False
                ) -> Callable[..., Twin]:
    """A block.bootstrap-style twin (tools/torch_twins/<twin_module>.py: constructor
    (input_dims, **settings), forward([x, y])). float_inputs: the twin is fed its inputs in at
    least float32 (MCB: its count sketches and FFTs run in float32, as ours do)."""

    def build(torch, s: dict[str, Any], m: int, n: int, params: Any, device: str,
              dtype) -> Twin:
        tm = importlib.import_module(f"tools.torch_twins.{twin_module}")
        up = lambda v: v.to(torch.promote_types(v.dtype, torch.float32))
        cast = up if float_inputs else (lambda v: v)
        return _module_twin(getattr(tm, cls_name)([m, n], **s),
                            lambda mod: tm.load_params(mod, params), tm.grads_as_flax,
                            lambda mod, x, y: mod([cast(x), cast(y)]), device, dtype)

    return build


def tensor_style(make: Callable[..., Any]) -> Callable[..., Twin]:
    """A twin of tools/torch_twins/tensor_fusion.py; make(tensor_fusion, settings, m, n) builds
    its module (forward(x, y))."""

    def build(torch, s: dict[str, Any], m: int, n: int, params: Any, device: str,
              dtype) -> Twin:
        from tools.torch_twins import tensor_fusion

        return _module_twin(make(tensor_fusion, s, m, n),
                            lambda mod: tensor_fusion.load_params(mod, params),
                            lambda mod: tensor_fusion.grads_as_flax(mod, params),
                            lambda mod, x, y: mod(x, y), device, dtype)

    return build
