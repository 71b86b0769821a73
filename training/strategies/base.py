"""Base strategy: one optimiser over the model, AMP-aware backward and step.

Under AMP (fp16 autocast on CUDA) every optimiser has its own :class:`torch.amp.GradScaler`
(:attr:`Strategy.scalers`, keyed like :attr:`Strategy.optimisers`): a scaler's ``update`` after
one optimiser's step must not change the scale another optimiser's gradients were computed
with, and an overflow in one player's gradients must only skip that player's step.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..losses import CompositeLoss


class Strategy:
    """Subclasses implement :meth:`train_step`. ``modules``/``optimisers`` are checkpointed by the trainer."""

    name = "base"

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.cfg = trainer.cfg
        self.model = trainer.model
        self.loss = CompositeLoss(self.cfg.loss, trainer.loss_generator,
                                  affine_index=getattr(trainer.model, "affine_index", None))
        self.modules: Dict[str, torch.nn.Module] = {"model": self.model}
        self.optimisers: Dict[str, torch.optim.Optimizer] = {"model": self.make_optimiser(self.model.parameters(),
                                                                                           self.cfg.optim.lr)}
        self._scalers: Dict[str, torch.amp.GradScaler] = {}

    @property
    def scalers(self) -> Dict[str, torch.amp.GradScaler]:
        """One gradient scaler per optimiser (same keys; disabled without AMP), made on first use."""
        for name in self.optimisers:
            if name not in self._scalers:
                self._scalers[name] = torch.amp.GradScaler(self.trainer.device.type, enabled=bool(self.trainer.amp))
        return self._scalers

    @property
    def scaler(self) -> torch.amp.GradScaler:
        """The model optimiser's scaler."""
        return self.scalers["model"]

    def make_optimiser(self, params, lr: float) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return torch.optim.Adam(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)

    def autocast(self):
        return torch.autocast(device_type=self.trainer.device.type, dtype=torch.float16, enabled=self.trainer.amp)

    def optimise(self, loss: torch.Tensor, name: str = "model", module: Optional[torch.nn.Module] = None) -> None:
        """Zero grads, backward ``loss`` (scaled under AMP), clip, step optimiser ``name``."""
        opt, scaler = self.optimisers[name], self.scalers[name]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        d = self.trainer.dist
        if d.enabled and name != "model":  # the model is DDP-wrapped; other modules are averaged here
            from ..distributed import average_gradients
            average_gradients(module or self.modules[name], d.world)
        if self.cfg.optim.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_((module or self.modules[name]).parameters(), self.cfg.optim.grad_clip)
        scaler.step(opt)
        scaler.update()

    def forward(self, batch: Dict[str, torch.Tensor]):
        """The student's ``(flow, flows)`` for the batch (uses the trainer's input transform, e.g. blur)."""
        f, m = self.trainer.network_inputs(batch)
        return self.trainer.net(f, m)

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        raise NotImplementedError

    @staticmethod
    def scalars(terms: Dict[str, torch.Tensor]) -> Dict[str, float]:
        return {k: float(v.detach()) for k, v in terms.items()}
