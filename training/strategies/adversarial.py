"""ALDK: adversarial learning with distilled knowledge (Tran et al.), on a frozen teacher.

Two players, two optimisers, alternating:

* **Critic** ``D`` (:class:`training.networks.FlowDiscriminator`), updated ``critic_steps``
  times every ``critic_every`` student steps, minimises
  ``-||D(phi_s) - D(phi_t)||^2 + lambda * (||grad_phi_hat D(phi_hat)||_2 - 1)^2`` with
  ``phi_hat = beta * phi_t + (1 - beta) * phi_s``, ``beta ~ U(0, 1)`` per sample: it learns
  to tell student flows from teacher flows, its gradient norm held near 1 (WGAN-GP).
* **Student**, every step, minimises ``gamma * l_rec + (1 - gamma) * ||D(phi_s) - D(phi_t)||^2``
  with ``l_rec`` the similarity loss on the final warp, plus the configured regularisers.

Differences from the public TensorFlow code of the method: the gradient penalty is taken
on the critic value (the quantity the loss uses) with per-sample norms over whatever flow
shape is given, not on logits of a hard-coded shape; and the critic is stepped by its
own optimiser on its own objective instead of never being updated separately.
"""
from __future__ import annotations

from typing import Dict

import torch

from ..losses import critic_gap, gradient_penalty
from ..networks import FlowDiscriminator
from .distill import DistillStrategy


class AdversarialStrategy(DistillStrategy):
    name = "adversarial"

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self.critic = FlowDiscriminator().to(trainer.device)
        self.modules["critic"] = self.critic
        self.optimisers["critic"] = self.make_optimiser(self.critic.parameters(), self.cfg.optim.critic_lr)

    def critic_round(self, student_flow: torch.Tensor, teacher_flow: torch.Tensor) -> Dict[str, float]:
        out = {}
        for _ in range(max(1, self.cfg.strategy.critic_steps)):
            gap = critic_gap(self.critic, student_flow.detach(), teacher_flow)
            gp = gradient_penalty(self.critic, teacher_flow, student_flow, self.trainer.loss_generator)
            loss = -gap + self.cfg.loss.gradient_penalty * gp
            self.optimise(loss, "critic")
            out = {"critic_gap": float(gap.detach()), "critic_gp": float(gp.detach()), "critic_loss": float(loss.detach())}
        return out

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        gamma = self.cfg.loss.gamma
        t_flow = self.teacher_flow(batch)
        with self.autocast():
            flow, flows = self.forward(batch)
        flow = flow.float()
        logs: Dict[str, float] = {}
        if self.trainer.step % max(1, self.cfg.strategy.critic_every) == 0:
            logs.update(self.critic_round(flow, t_flow))
        for p in self.critic.parameters():
            p.requires_grad_(False)
        terms = self.loss(batch, flow, [f.float() for f in flows], teacher_flow=t_flow, weights={"sim": gamma})
        terms["adv"] = critic_gap(self.critic, flow, t_flow)
        terms["total"] = terms["total"] + (1.0 - gamma) * terms["adv"]
        self.optimise(terms["total"])
        for p in self.critic.parameters():
            p.requires_grad_(True)
        logs.update(self.scalars(terms))
        return logs
