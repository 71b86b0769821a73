"""Distillation from a frozen teacher: the student's loss adds the flow distillation term."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import torch

from DeepRegLib.refine import RefineConfig
from DeepRegLib.spatial import compose

from ..config import to_dict
from ..networks import load_trained
from ..networks.refined_teacher import RefinedTeacherFlows, flows_folder
from .base import Strategy


def load_teacher(path: str | Path, device: torch.device) -> torch.nn.Module:
    """A frozen network from a bundle folder, a run folder (its ``best.pt``) or a checkpoint file."""
    p = Path(path)
    if p.is_dir() and not (p / "card.json").exists():
        p = p / "best.pt"
    if not p.exists():
        raise FileNotFoundError(f"teacher checkpoint not found: {p} (train the teacher experiment first)")
    net = load_trained(p).to(device).eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    return net


class DistillStrategy(Strategy):
    name = "distill"

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        if not self.cfg.strategy.teacher:
            raise ValueError("strategy 'distill' needs strategy.teacher (a run folder or checkpoint)")
        root = self.trainer.resolve(self.cfg.strategy.teacher)
        self.teacher = load_teacher(root, trainer.device)
        #: (pair index, flipped) -> the teacher's flow (CPU); the teacher is frozen, so each key is computed once
        self.cache: Dict[Tuple[int, bool], torch.Tensor] = {}
        #: strategy.teacher_refine: the teacher's flows refined per pair, kept on disk under the data cache
        self.refined = None
        if self.cfg.strategy.teacher_refine or self.cfg.strategy.teacher_store:
            refine = RefineConfig() if self.cfg.strategy.teacher_refine else None
            folder = flows_folder(root, to_dict(self.cfg)["data"], self.trainer.resolve(self.cfg.data.cache_dir), refine)
            self.refined = RefinedTeacherFlows(folder, self.trainer.train_data.grids, refine)

    def _teacher(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), self.autocast():
            flow, _ = self.teacher(fixed, moving)  # the teacher always sees sharp inputs
        return flow.float()

    def teacher_flow(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The frozen teacher's ``(B, 3, D, H, W)`` voxel flow for the batch's (sharp) pairs.

        With ``strategy.teacher_cache`` each (pair, flip) is computed once and kept on the CPU,
        which is exact (the same deterministic forward) and makes distillation cost what
        training the student alone costs once every pair has been seen. Augmented pairs
        (``batch['augmented']``: a random affine on the moving image) are never cached. A pair whose
        fixed image was warped by ``batch['fixed_warp']`` (``psi``, ``data.warp_fixed``) gets its original
        pair's cached flow ``phi`` composed with it, ``compose(phi, psi)``: the exact mapping of the warped
        pair under the teacher's mapping of the original one (training/augment.py).
        """
        cached = self.cfg.strategy.teacher_cache and "index" in batch and "augmented" not in batch
        if not cached:
            if self.refined is not None:
                raise ValueError("strategy.teacher_refine / teacher_store need the teacher cache (strategy.teacher_cache) and "
                                 "no augmentation: a refined flow costs seconds per pair")
            return self._teacher(batch["fixed"], batch["moving"])
        keys = list(zip(batch["index"].tolist(), batch["flipped"].tolist()))
        missing = [b for b, k in enumerate(keys) if k not in self.cache]
        fixed = batch.get("fixed_unwarped", batch["fixed"])  # the original pair's, which the cache holds
        if missing and self.refined is not None:
            for b in missing:
                self.cache[keys[b]] = self.refined.flow(keys[b], fixed[b:b + 1], batch["moving"][b:b + 1],
                                                        self._teacher, batch["spacing"])
        elif missing:
            flows = self._teacher(fixed[missing], batch["moving"][missing])
            for b, f in zip(missing, flows):
                self.cache[keys[b]] = f.cpu()
        flow = torch.stack([self.cache[k] for k in keys]).to(batch["fixed"].device)
        return compose(flow, batch["fixed_warp"].to(flow)) if "fixed_warp" in batch else flow

    @staticmethod
    def taught(batch: Dict[str, torch.Tensor]) -> bool:
        """Whether the teacher speaks on this batch: not on pairs whose answer is known exactly
        (``batch['known_flow']``, the precision work's same-subject pairs, ``data.same_subject``). There the
        student learns from the answer (``loss.known_flow``); the teacher is neither run nor asked."""
        return batch.get("known_flow") is None

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        t_flow = self.teacher_flow(batch) if self.taught(batch) else None
        with self.autocast():
            flow, flows = self.forward(batch)
            terms = self.loss(batch, flow.float(), [f.float() for f in flows], teacher_flow=t_flow)
        self.optimise(terms["total"])
        return self.scalars(terms)
