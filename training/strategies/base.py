"""Base strategy: one optimiser over the model, AMP-aware backward and step."""
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
        self.loss = CompositeLoss(self.cfg.loss, trainer.loss_generator)
        self.modules: Dict[str, torch.nn.Module] = {"model": self.model}
        self.optimisers: Dict[str, torch.optim.Optimizer] = {"model": self.make_optimiser(self.model.parameters(),
                                                                                           self.cfg.optim.lr)}
        self.scaler = torch.amp.GradScaler("cuda", enabled=trainer.amp)

    def make_optimiser(self, params, lr: float) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return torch.optim.Adam(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)

    def autocast(self):
        return torch.autocast(device_type=self.trainer.device.type, dtype=torch.float16, enabled=self.trainer.amp)

    def optimise(self, loss: torch.Tensor, name: str = "model", module: Optional[torch.nn.Module] = None) -> None:
        """Zero grads, backward ``loss`` (scaled under AMP), clip, step optimiser ``name``."""
        opt = self.optimisers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        d = self.trainer.dist
        if d.enabled and name != "model":  # the model is DDP-wrapped; other modules are averaged here
            from ..distributed import average_gradients
            average_gradients(module or self.modules[name], d.world)
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_((module or self.modules[name]).parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()

    def forward(self, batch: Dict[str, torch.Tensor]):
        """The student's ``(flow, flows)`` for the batch (uses the trainer's input transform, e.g. blur)."""
        f, m = self.trainer.network_inputs(batch)
        return self.trainer.net(f, m)

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        raise NotImplementedError

    @staticmethod
    def scalars(terms: Dict[str, torch.Tensor]) -> Dict[str, float]:
        return {k: float(v.detach()) for k, v in terms.items()}
