"""Standard training: similarity + regularisers (+ label Dice), one optimiser step per batch."""
from __future__ import annotations

from typing import Dict

import torch

from .base import Strategy


class StandardStrategy(Strategy):
    name = "standard"

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        with self.autocast():
            flow, flows = self.forward(batch)
            terms = self.loss(batch, flow.float(), [f.float() for f in flows])
        self.optimise(terms["total"])
        return self.scalars(terms)
