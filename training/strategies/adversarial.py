"""ALDK: adversarial learning with distilled knowledge (Tran et al.), on a frozen teacher.

Two players, two optimisers (and, under AMP, two gradient scalers), alternating:

* **Critic** ``D`` (:class:`training.networks.FlowDiscriminator`), updated ``critic_steps``
  times on adversarial steps that are also multiples of ``critic_every``, minimises
  ``-gap + lambda * (||grad_phi_hat D(phi_hat)||_2 - 1)^2`` with
  ``phi_hat = beta * phi_t + (1 - beta) * phi_s`` (:func:`training.losses.gradient_penalty`):
  it learns to tell student flows from teacher flows, its gradient norm held near 1 (WGAN-GP).
* **Student**, every step, minimises ``gamma * l_rec + (1 - gamma) * gap`` on adversarial steps
  and ``l_rec`` alone on the others, with ``l_rec`` the similarity loss on the final warp, plus
  the configured regularisers (:func:`student_terms`).

``gap`` (:func:`training.losses.critic_gap`, ``strategy.critic_objective``):

* ``'linear'`` (the reference code's): ``D(phi_t) - D(phi_s)`` on the critic's logits (no
  sigmoid). Its gradient with respect to the critic never vanishes where the two scores are
  equal, which is where a fresh critic starts.
* ``'squared'`` (the seed text's, and the earlier runs'): ``||D(phi_s) - D(phi_t)||^2`` of sigmoid
  scores; its gradient is zero wherever the two scores are equal.

Schedule (the reference's learning scheme): the adversarial term and the critic rounds only on
steps with ``step % adversarial_every == 0`` and ``step < adversarial_until`` (0: no end).

The published settings (``training/experiments/_aldk.py``: ``ldr_aldk_linear``,
``ldr_aldk_squared``): beta 0.1 fixed, lambda 0.1, gamma 0.3, the adversarial term every 3rd step,
off from step 8000, a 5-layer critic (16..256 channels). The defaults of the config (beta
``U(0, 1)`` per sample, ``loss.gradient_penalty`` 10, ``loss.gamma`` 0.5, every step, a 6-layer
sigmoid critic) are those of the earlier runs (``ldr_aldk`` and its ablations), which they reproduce.

Differences from the public TensorFlow code of the method: the gradient penalty is taken at the
text's ``phi_hat`` on the critic value with per-sample norms over whatever flow shape is given (the
code takes it on interpolated logits of a hard-coded shape); the critic is stepped by its own
optimiser on its own objective (the code minimises one loss over the student and critic variables
together); the student minimises the gap the critic maximises (the Wasserstein generator's sign);
gamma weighs the similarity term only (the code also weighs the regularisers by it); and the
schedule's adversarial steps are ``0, 3, 6, ...`` (the code's ``2, 5, 8, ...``).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

from ..losses import CRITIC_OBJECTIVES, CompositeLoss, critic_gap, gradient_penalty
from ..networks import FlowDiscriminator
from .distill import DistillStrategy
from DeepRegLib.names import look_up_option


def adversarial_step(step: int, every: int = 1, until: int = 0) -> bool:
    """Whether trainer step ``step`` (0-based) carries the adversarial term: ``step % every == 0``
    and, with ``until > 0``, ``step < until``."""
    return step % max(1, int(every)) == 0 and (int(until) <= 0 or step < int(until))


def critic_loss(critic, student_flow: torch.Tensor, teacher_flow: torch.Tensor, objective: str,
                penalty: float, beta: Optional[float] = None, generator: Optional[torch.Generator] = None
                ) -> Dict[str, torch.Tensor]:
    """The critic's loss ``-gap + penalty * gp`` (``loss``) with its ``gap`` and ``gp``; the student's flow is detached."""
    gap = critic_gap(critic, student_flow.detach(), teacher_flow.detach(), objective)
    gp = gradient_penalty(critic, teacher_flow, student_flow, generator, beta)
    return {"loss": -gap + penalty * gp, "gap": gap, "gp": gp}


def student_terms(loss: CompositeLoss, batch: Dict[str, torch.Tensor], flow: torch.Tensor,
                  flows: Sequence[torch.Tensor], teacher_flow: Optional[torch.Tensor], critic, gamma: float,
                  objective: str, adversarial: bool = True) -> Dict[str, torch.Tensor]:
    """The student's loss terms: ``total = gamma * sim + regularisers + (1 - gamma) * adv`` on an
    adversarial step (``adv`` the critic's gap), the plain composite loss (``sim`` weighted 1) otherwise."""
    if not adversarial:
        return loss(batch, flow, flows, teacher_flow=teacher_flow)
    terms = loss(batch, flow, flows, teacher_flow=teacher_flow, weights={"sim": gamma})
    terms["adv"] = critic_gap(critic, flow, teacher_flow, objective)
    terms["total"] = terms["total"] + (1.0 - gamma) * terms["adv"]
    return terms


def make_critic(strategy_cfg) -> FlowDiscriminator:
    """The critic a :class:`training.config.StrategyConfig` describes: ``critic_layers`` convolutions,
    logits for the linear objective, sigmoid scores for the squared one."""
    objective = look_up_option(strategy_cfg.critic_objective, CRITIC_OBJECTIVES, "strategy.critic_objective")
    return FlowDiscriminator(layers=strategy_cfg.critic_layers, output="logit" if objective == "linear" else "sigmoid")


class AdversarialStrategy(DistillStrategy):
    name = "adversarial"

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        s = self.cfg.strategy
        self.objective = look_up_option(s.critic_objective, CRITIC_OBJECTIVES, "strategy.critic_objective")
        self.critic = make_critic(s).to(trainer.device)
        self.modules["critic"] = self.critic
        self.optimisers["critic"] = self.make_optimiser(self.critic.parameters(), self.cfg.optim.critic_lr)

    def adversarial(self, step: int) -> bool:
        s = self.cfg.strategy
        return adversarial_step(step, s.adversarial_every, s.adversarial_until)

    def critic_round(self, student_flow: torch.Tensor, teacher_flow: torch.Tensor) -> Dict[str, float]:
        out = {}
        s = self.cfg.strategy
        for _ in range(max(1, s.critic_steps)):
            c = critic_loss(self.critic, student_flow, teacher_flow, self.objective, self.cfg.loss.gradient_penalty,
                            s.aldk_beta, self.trainer.loss_generator)
            self.optimise(c["loss"], "critic")
            out = {"critic_gap": float(c["gap"].detach()), "critic_gp": float(c["gp"].detach()),
                   "critic_loss": float(c["loss"].detach())}
        return out

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        step = self.trainer.step
        taught = self.taught(batch)  # no teacher, and so no critic, on a pair with a known answer
        adversarial = self.adversarial(step) and taught
        t_flow = self.teacher_flow(batch) if taught and (adversarial or self.cfg.loss.distill) else None
        with self.autocast():
            flow, flows = self.forward(batch)
        flow = flow.float()
        logs: Dict[str, float] = {"adversarial": float(adversarial)}
        if adversarial and step % max(1, self.cfg.strategy.critic_every) == 0:
            logs.update(self.critic_round(flow, t_flow))
        for p in self.critic.parameters():
            p.requires_grad_(False)
        terms = student_terms(self.loss, batch, flow, [f.float() for f in flows], t_flow, self.critic,
                              self.cfg.loss.gamma, self.objective, adversarial)
        self.optimise(terms["total"])
        for p in self.critic.parameters():
            p.requires_grad_(True)
        logs.update(self.scalars(terms))
        return logs
