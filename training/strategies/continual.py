"""Strategies for continual learning: SAM, experience replay, Reptile, and SAMCL (all three).

* ``sam``: sharpness-aware minimisation (Foret et al. 2021), adaptive by default (ASAM,
  Kwon et al. 2021). Two passes per step: the gradient ``g`` at ``w``; the ascent step
  ``e = rho * T^2 g / ||T g||`` (``T = |w|`` adaptive, ``T = 1`` plain SAM); the gradient at
  ``w + e``; back to ``w``; the optimiser steps with the gradient taken at ``w + e``.
* ``replay``: experience replay. Every trained pair ``(task, pair)`` goes into a reservoir
  buffer of ``continual.buffer_size`` pairs; each step adds the loss of one replayed pair
  (of an earlier task when there is one) with weight ``strategy.replay_weight``.
* ``reptile``: a Reptile outer loop (Nichol et al. 2018) with replay: every
  ``reptile_inner_steps`` trainer steps the weights are interpolated
  ``w <- w0 + beta * (w_inner - w0)`` from the window's start ``w0``.
* ``samcl``: SAM inside the Reptile loop, with replay (the seed's SAMCL).

Every method sees one batch of the current task per trainer step, so that they share one
budget; replay adds one buffered pair per step. Pairs of different tasks live on
different grids, so the current and replayed pairs are separate forward passes whose
gradients are accumulated. Under AMP (fp16 autocast on CUDA) the losses are scaled by the
model optimiser's gradient scaler and unscaled before clipping and stepping; SAM's ascent
step is scale-invariant, so the first pass's scaled gradients give it directly, and a
first pass that overflows skips the step (and lowers the scale) as any overflowing step does.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Iterable, List, Optional

import torch

from ..continual import ReplayBuffer
from .base import Strategy


# ----------------------------------------------------------------------------- SAM
@torch.no_grad()
def sam_perturbation(params: Iterable[torch.nn.Parameter], rho: float, adaptive: bool = True,
                     eps: float = 1e-12) -> List[Optional[torch.Tensor]]:
    """The SAM ascent step ``e`` for every parameter from its current ``.grad`` (None where no grad).

    ``e = rho * T^2 g / ||T g||_2`` over all parameters, ``T = |w|`` (adaptive) or 1.
    """
    params = list(params)
    scaled = [(p.abs() * p.grad if adaptive else p.grad) for p in params if p.grad is not None]
    if not scaled:
        return [None for _ in params]
    norm = torch.norm(torch.stack([s.norm(2) for s in scaled]), 2)
    scale = rho / (norm + eps)
    return [None if p.grad is None else (p.pow(2) if adaptive else 1.0) * p.grad * scale for p in params]


def sam_step(params: List[torch.nn.Parameter], closure: Callable[[], Dict[str, float]],
             optimiser: torch.optim.Optimizer, rho: float, adaptive: bool = True,
             grad_clip: float = 0.0, scaler: Optional[torch.amp.GradScaler] = None) -> Dict[str, float]:
    """One SAM update. ``closure()`` zeroes nothing, runs forward + backward, returns logs.

    ``scaler`` (AMP): the closure backpropagates ``scaler.scale(loss)``; the ascent step ``e`` is
    invariant to the gradients' scale, the final gradients are unscaled before clipping, and
    non-finite first-pass gradients skip the step (the scaler records the overflow and backs off).

    Returns the logs of the first pass (at ``w``) plus ``sam_loss`` (``total`` at ``w + e``).
    """
    optimiser.zero_grad(set_to_none=True)
    logs = closure()
    if scaler is not None and scaler.is_enabled():
        finite = all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
        if not finite:  # no ascent step from overflowed gradients: skip this update, lower the scale
            scaler.unscale_(optimiser)
            scaler.step(optimiser)
            scaler.update()
            return {**logs, "sam_loss": float("nan")}
    e = sam_perturbation(params, rho, adaptive)
    with torch.no_grad():
        for p, d in zip(params, e):
            if d is not None:
                p.add_(d)
    optimiser.zero_grad(set_to_none=True)
    logs_sharp = closure()
    with torch.no_grad():
        for p, d in zip(params, e):
            if d is not None:
                p.sub_(d)
    if scaler is not None:
        scaler.unscale_(optimiser)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimiser)
        scaler.update()
    else:
        optimiser.step()
    return {**logs, "sam_loss": logs_sharp.get("total", float("nan"))}


# ----------------------------------------------------------------------------- Reptile
@torch.no_grad()
def reptile_interpolate(model: torch.nn.Module, anchor: torch.nn.Module, beta: float) -> None:
    """``w <- w0 + beta * (w - w0)`` for every parameter (``w0`` = ``anchor``'s); buffers are kept from ``model``."""
    for p, a in zip(model.parameters(), anchor.parameters()):
        p.copy_(a + beta * (p - a))


@torch.no_grad()
def copy_weights(target: torch.nn.Module, source: torch.nn.Module) -> None:
    for t, s in zip(target.state_dict().values(), source.state_dict().values()):
        t.copy_(s)


# ----------------------------------------------------------------------------- strategies
class ContinualStrategy(Strategy):
    """Sequential fine-tuning plus any of SAM, replay and the Reptile outer loop."""

    name = "continual"
    use_sam = False
    use_replay = False
    use_reptile = False

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        s = self.cfg.strategy
        if self.use_replay and (trainer.continual is None or self.cfg.continual.buffer_size <= 0):
            raise ValueError(f"strategy {self.name!r} needs continual.tasks and continual.buffer_size > 0")
        if self.use_reptile:
            if s.reptile_inner_steps < 1 or not 0 < s.reptile_beta <= 1:
                raise ValueError("reptile needs reptile_inner_steps >= 1 and 0 < reptile_beta <= 1")
            self.anchor = copy.deepcopy(self.model).requires_grad_(False)
            self.modules["reptile_anchor"] = self.anchor  # checkpointed: exact resume inside a window
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    @property
    def buffer(self) -> ReplayBuffer:
        return ReplayBuffer(self.cfg.continual.buffer_size, self.trainer.extra.setdefault("replay", {}))

    def batch_terms(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        with self.autocast():
            flow, flows = self.forward(batch)
        return self.loss(batch, flow.float(), [f.float() for f in flows])

    def closure(self, batches: List[Dict[str, torch.Tensor]]) -> Callable[[], Dict[str, float]]:
        """Forward + backward of the current batch (and the replayed one), gradients accumulated."""
        def run() -> Dict[str, float]:
            logs: Dict[str, float] = {}
            total = 0.0
            for k, b in enumerate(batches):
                terms = self.batch_terms(b)
                weight = 1.0 if k == 0 else self.cfg.strategy.replay_weight
                self.scaler.scale(weight * terms["total"]).backward()  # unchanged without AMP
                total += weight * float(terms["total"].detach())
                logs.update({(n if k == 0 else f"replay_{n}"): float(v.detach()) for n, v in terms.items()})
            logs["total"] = total
            return logs
        return run

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        tr = self.trainer
        s = self.cfg.strategy
        if self.use_reptile and tr.step % s.reptile_inner_steps == 0:
            copy_weights(self.anchor, self.model)  # w0: the start of this outer step
        batches = [batch]
        if self.use_replay:
            ref = self.buffer.sample(tr.sampler, exclude_task=batch["ref"][0])
            if ref is not None and tuple(ref) != tuple(batch["ref"]):
                batches.append(tr.continual.batch(ref[0], [ref[1]], tr.device))
        opt, scaler = self.optimisers["model"], self.scaler
        if self.use_sam:
            logs = sam_step(self.params, self.closure(batches), opt, s.sam_rho, s.sam_adaptive, self.cfg.optim.grad_clip,
                            scaler)
        else:
            opt.zero_grad(set_to_none=True)
            logs = self.closure(batches)()
            scaler.unscale_(opt)  # no-op without AMP
            if self.cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
            scaler.step(opt)
            scaler.update()
        if self.use_replay:
            self.buffer.add(batch["ref"], tr.sampler)
            logs["buffer"] = float(len(self.buffer))
        if self.use_reptile and (tr.step + 1) % s.reptile_inner_steps == 0:
            reptile_interpolate(self.model, self.anchor, s.reptile_beta)
        return logs


class SAMStrategy(ContinualStrategy):
    name = "sam"
    use_sam = True


class ReplayStrategy(ContinualStrategy):
    name = "replay"
    use_replay = True


class ReptileStrategy(ContinualStrategy):
    name = "reptile"
    use_replay = True
    use_reptile = True


class SAMCLStrategy(ContinualStrategy):
    name = "samcl"
    use_sam = True
    use_replay = True
    use_reptile = True
