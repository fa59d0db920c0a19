"""The twin's train step: our loss and optimizer (avfbp_jax.train.step, optimizer) in torch, eager
or under torch.compile.

    step = TwinStep(twin, train_config(), device="cpu", compile_="inductor")
    loss = step(to_torch(batch))      # forward, backward, clipping, AdamW: the twin's params move

Loss: softmax cross-entropy with label smoothing (F.cross_entropy's `label_smoothing` is optax's
smooth_labels: (1 - a) one-hot + a / classes), averaged with the per-example weights.
Optimizer, for train.optimizer "adamw" (the default; the others are not twinned):
  - torch.nn.utils.clip_grad_norm_ at train.grad_clip_norm (optax.clip_by_global_norm; torch
    divides by norm + 1e-6 where optax divides by the norm, a relative 1e-6 on clipped updates);
  - torch.optim.AdamW with b1 = train.momentum, b2 = train.b2, eps 1e-8 (optax's default) and
    decoupled weight decay train.weight_decay on kernels only (parameters with ndim > 1, our
    _decay_mask), none on biases and scales: p <- p (1 - lr wd) - lr m^ / (sqrt(v^) + eps), which
    is optax.adamw's update;
  - the learning rate of each step from our schedule (optimizer.make_schedule), tabulated once.
Parameters that do not train in the twin (the frozen FER encoder) are left out, as ours freezes
them. Modality dropout (train.modality_dropout) is not twinned. Under torch.compile the loss
(forward and its backward, through AOTAutograd) and the update (clipping and AdamW, with the
learning rate as a tensor so that a new value does not recompile) are compiled separately.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch
import torch.nn.functional as F

from avfbp_jax.train.optimizer import make_schedule

ADAM_EPS = 1e-8  # optax.adamw's default eps


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                           label_smoothing: float) -> torch.Tensor:
    """Our loss (train.step.weighted_cross_entropy): weighted mean of smoothed cross-entropy."""
    per_example = F.cross_entropy(logits.float(), labels.long(), reduction="none",
                                  label_smoothing=label_smoothing)
    return (per_example * weights).sum() / weights.sum().clamp(min=1e-9)


def learning_rates(config: ml_collections.ConfigDict) -> np.ndarray:
    """Our schedule's learning rate at steps 0 .. num_steps (it is constant after num_steps)."""
    steps = jnp.arange(config.num_steps + 1)
    return np.asarray(jax.vmap(make_schedule(config))(steps), np.float64)


class TwinStep:
    """One train step of a twin model (see module doc).

    compile_: None runs eagerly; else the torch.compile backend: "inductor" (torch's default,
    generated kernels) or "aot_eager" (the same captured forward, backward and update graphs run
    by torch's own kernels: what the tests use, as it compiles in seconds).
    The twin's model.dtype "bfloat16" (float32 parameters, bfloat16 compute in ours) runs the
    forward pass under torch.autocast in bfloat16.
    """

    def __init__(self, twin: torch.nn.Module, config: ml_collections.ConfigDict, *,
                 device: str = "cpu", compile_: str | None = None):
        if config.optimizer != "adamw":
            raise ValueError(f"train.optimizer={config.optimizer!r}: the twin step has adamw only")
        self.twin, self.config, self.device = twin, config, device
        self.bf16 = twin.cfg.dtype == "bfloat16"
        self.lrs = learning_rates(config)
        self.step = 0
        params = [p for p in twin.parameters() if p.requires_grad]
        self.params = params
        lr = torch.tensor(self.lrs[0], device=device) if compile_ else float(self.lrs[0])
        groups = [{"params": [p for p in params if p.ndim > 1],
                   "weight_decay": config.weight_decay},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=(config.momentum, config.b2),
                                           eps=ADAM_EPS)
        self._loss = torch.compile(self.loss, backend=compile_) if compile_ else self.loss
        self._update = torch.compile(self.update, backend=compile_) if compile_ else self.update
        self.compiled = compile_ is not None

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of the twin (in train mode: dropout on) on a batch."""
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.twin(batch)
        return weighted_cross_entropy(logits, batch["label"], batch["weight"],
                                      self.config.label_smoothing)

    def update(self) -> None:
        """Clipping and the AdamW update from the gradients in .grad."""
        if self.config.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip_norm)
        self.optimizer.step()

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One step on `batch`; returns the loss (before the update)."""
        self.twin.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(batch)
        loss.backward()
        self.apply_gradients()
        return loss.detach()

    def apply_gradients(self) -> None:
        """This step's update from the gradients in the parameters' .grad; counts the step."""
        lr = self.lrs[min(self.step, len(self.lrs) - 1)]
        for group in self.optimizer.param_groups:
            if self.compiled:
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._update()
        self.step += 1
