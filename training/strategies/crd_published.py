"""CRD stage 2 as published: a low-resolution student distilled from a frozen, pre-trained FST.

Stage 1 (``crd_fst_pretrain``) trains :class:`training.networks.fst.SharedFeatureShiftedTeacher`
as any registration network. Here it is frozen (``strategy.teacher``: its run folder) and the
low-resolution student (``model.architecture='lowres_ldr'``) learns, as the authors' ``fetch_loss``,
from two terms only (``loss.similarity_weight = 0``, ``loss.smooth = 0`` in ``crd_published``)::

    distill   * ||phi_s - phi_FST||^2   (mm^2, summed over axes, mean over voxels; the FST's flow is high-resolution)
    attention * sum_l mean((A(s_l) - A(f_l))^2)   (raw attention maps, A(x) = sum_c x_c^2)

(``strategy.crd_attention = 'normalised'``: the L2-normalised maps of :func:`training.losses.attention_loss`
instead, whose scale does not depend on the two networks' activation sizes) with ``(s_l, f_l)`` = the student's first cascade's decoder features ``u3, u2, u1`` (1/8, 1/4, 1/2 of the
4 mm grid) and the FST's fused ``f16, f8, f4`` (the same sizes). Setting ``similarity_weight`` or
``smooth`` adds the usual unsupervised terms beside them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch

from DeepRegLib.models import LowResolution

from DeepRegLib.names import look_up_option

from ..losses import attention_loss, raw_attention_loss
from ..networks.fst import SharedFeatureShiftedTeacher, match_shape
from .base import Strategy
from .crd import features_forward
from .distill import load_teacher

#: the student's features compared with the FST's f16, f8, f4: u3, u2, u1 of LDRSubnet.forward_features
STUDENT_LEVELS = (4, 5, 6)


class PublishedCRDStrategy(Strategy):
    name = "crd_published"

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        if not isinstance(self.model, LowResolution) or self.model.factor != 2:
            raise ValueError("strategy 'crd_published' trains a low-resolution student at factor 2: expected "
                             f"model.architecture='lowres_ldr' with factor 2, got {self.cfg.model.architecture!r}")
        if not self.cfg.strategy.teacher:
            raise ValueError("strategy 'crd_published' needs strategy.teacher: the pre-trained FST's run folder "
                             "(python -m training run crd_fst_pretrain)")
        path = self.trainer.resolve(self.cfg.strategy.teacher)
        self.teacher = load_teacher(str(path), trainer.device)  # frozen: eval mode, no gradients
        if not isinstance(self.teacher, SharedFeatureShiftedTeacher):
            raise ValueError(f"strategy 'crd_published': expected a pre-trained FST (architecture 'fst_ldr') as the "
                             f"teacher, got {type(self.teacher).__name__} from {Path(self.cfg.strategy.teacher)}")
        form = look_up_option(self.cfg.strategy.crd_attention, ("raw", "normalised"), "strategy.crd_attention")
        self.attention_loss = raw_attention_loss if form == "raw" else attention_loss

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        w = self.cfg.loss
        f, m = self.trainer.network_inputs(batch)
        with torch.no_grad(), self.autocast():
            t_flow, t_feats = self.teacher.features(f, m)
        with self.autocast(), features_forward(self.model):  # through the DDP wrapper when distributed
            flow, flows, feats = self.trainer.net(f, m)
        terms = self.loss(batch, flow.float(), [x.float() for x in flows], teacher_flow=t_flow.float())
        if w.attention:
            s = [feats[0][i] for i in STUDENT_LEVELS]
            t = [match_shape(x.float(), y.shape[2:]) for x, y in zip(t_feats[:3], s)]
            terms["attention"] = self.attention_loss(s, t)
            terms["total"] = terms["total"] + w.attention * terms["attention"]
        self.optimise(terms["total"])
        return self.scalars(terms)
