"""CRD: cross-resolution distillation of a low-resolution student (after Hu et al., TCSVT 2022).

The student is :class:`DeepRegLib.models.LowResolution` (``model.architecture='lowres_ldr'``):
an LDR cascade that runs on the pair average-pooled x``factor`` (2 mm -> 4 mm) and whose
flow is upsampled back to the 2 mm network grid. The teacher (``strategy.teacher``, a run
folder with ``best.pt``) is a frozen *high-resolution* engine network (an LDR cascade at
2 mm, e.g. ``training/runs/ldr_flowdistill``, the distilled 2 mm student).

Feature-shifted teacher (FST): the design chosen here
-----------------------------------------------------
The seed describes the FST only in words ("shift and fuse the features of the
high/low-resolution models, so that the student learns from features at its own
resolution"). What this module does:

* **Shift.** Both networks have four stride-2 encoder levels. The high-resolution (HR)
  model sees the 2 mm grid, the student the 4 mm grid, so HR level ``k + 1`` has the spatial
  size of student level ``k``: HR ``e2, e3, e4`` (8, 16, 32 mm) are shifted by one level onto
  student ``e1, e2, e3``. Both grids start at the same corner and both networks pad at the
  high end only, so the shifted maps line up voxel for voxel (the receptive-field centre of
  HR ``e2[j]`` and of student ``e1[j]`` is the same 2 mm coordinate ``4j + 1.5``); the HR
  map is replicate-padded (or cropped) at the high end to the student's padded size.
* **Fuse.** At each of those three levels ``g_k = LeakyReLU(Conv1x1x1([s_k, h_{k+1}]))``
  with the student's channel count, where ``s_k`` is the student's encoder feature
  (*detached*: the FST never changes the student through its own loss) and ``h_{k+1}`` the
  frozen HR feature. The deepest level has no HR counterpart and is the FST's own stride-2
  convolution of ``g_3``.
* **Decode.** The FST then has the student's decoder shape (three transposed convolutions
  with skips ``g_3, g_2, g_1`` and a near-zero-initialised flow head): it is a low-resolution
  registration network whose encoder sees HR information, with its own optimiser
  (``fst``), trained every step on its own flow (upsampled to 2 mm like the student's) with
  the usual terms: similarity + smoothness + ``loss.distill`` x flow distillation from the
  HR teacher.

Only the student's first cascade is distilled at feature level (HR and student cascades
see the same fixed/moving pair there; later cascades see differently warped inputs).

Student loss (one optimiser step per batch, after the FST's step)::

    sim + smooth * sum_c smooth(flow_c)                 (CompositeLoss, as every student)
        + distill  * ||phi_s - phi_HR||^2  (mm^2)        flow distillation from the HR model
        + fst_flow * ||phi_s,1 - phi_FST||^2  (mm^2)     first cascade vs the FST's flow
        + attention * AT(student, FST)                   attention maps at 8, 16 and 32 mm

``AT`` (:func:`training.losses.attention_loss`) compares normalised attention maps
(channel-wise sum of squared activations) of six feature pairs at three scales: student
``e1, e2, e3`` vs the fused ``g1, g2, g3`` and student decoder ``u3, u2, u1`` vs the FST
decoder's. At inference only the student is used.

The weights of ``crd_lowres`` (``attention=0.1``, ``fst_flow=0.01``, ``distill=0.01`` as in
the 2 mm ablation) are starting values, not tuned (no real CRD training has been run yet):
the attention term is about 0.5 at the first steps (random FST), so 0.1 keeps it below the
similarity term.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
import torch.nn as nn

from DeepRegLib.models import LowResolution
from DeepRegLib.models.blocks import ConvAct, UpConvAct, small_init
from DeepRegLib.models.ldr import down, up

from ..losses import attention_loss, flow_distillation_loss
from ..networks.fst import match_shape
from .base import Strategy
from .distill import load_teacher

#: student feature indices compared by the attention loss: e1, e2, e3, u3, u2, u1
ATTENTION_LEVELS = (0, 1, 2, 4, 5, 6)


class FeatureShiftedTeacher(nn.Module):
    """Shift HR features one level down and fuse them with the student's; decode a low-resolution flow.

    ``forward(student_features, teacher_features) -> (flow, features)``: inputs are the
    7-level feature lists of :meth:`DeepRegLib.models.LDRSubnet.forward_features` (student on
    its padded low-resolution grid, teacher on the 2 mm grid); ``flow`` ``(B, 3, *grid)`` is in
    low-resolution voxels on the student's padded grid; ``features`` are ``[g1, g2, g3, g4, v3,
    v2, v1]`` with the student's shapes.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int], pad_inside: bool = False
                 ) -> None:
        super().__init__()
        #: as the student's subnet: odd sides padded before the stride-2 convolution, decoder outputs cropped
        self.pad_inside = bool(pad_inside)
        s, t = list(student_channels), list(teacher_channels)
        if len(s) != 7 or len(t) != 7:
            raise ValueError(f"expected 7 feature levels (LDR), got {len(s)} (student) and {len(t)} (teacher)")
        self.fuse = nn.ModuleList([ConvAct(s[k] + t[k + 1], s[k], kernel=1, act="leaky") for k in range(3)])
        self.enc4 = ConvAct(s[2], s[3], 4, 2, 1)
        self.dec3 = UpConvAct(s[3], s[2])
        self.dec2 = UpConvAct(s[2] * 2, s[1])
        self.dec1 = UpConvAct(s[1] * 2, s[0])
        self.flow = small_init(nn.ConvTranspose3d(s[0] * 2, 3, 4, 2, 1))

    def forward(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]
                ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        g = []
        for k in range(3):
            sk = student[k].detach()
            hk = match_shape(teacher[k + 1].detach().to(sk.dtype), sk.shape[2:])
            g.append(self.fuse[k](torch.cat([sk, hk], dim=1)))
        p = self.pad_inside
        g4 = down(self.enc4, g[2], p)
        v3 = up(self.dec3, g4, g[2], p)
        v2 = up(self.dec2, torch.cat([v3, g[2]], dim=1), g[1], p)
        v1 = up(self.dec1, torch.cat([v2, g[1]], dim=1), g[0], p)
        flow = self.flow(torch.cat([v1, g[0]], dim=1))
        return flow, [g[0], g[1], g[2], g4, v3, v2, v1]


@contextlib.contextmanager
def features_forward(model: nn.Module) -> Iterator[None]:
    """Within the block, calling ``model`` (or the DDP wrapper around it) runs ``model.forward_features``.

    The student's features come through the module's ``forward`` this way, so that under
    ``torchrun`` the :class:`~torch.nn.parallel.DistributedDataParallel` wrapper's forward sees the
    pass and all-reduces the student's gradients (calling ``model.forward_features`` directly
    bypasses the wrapper, and every rank would then step with its own gradients). An instance
    attribute ``forward`` shadows the class's method for the block only.
    """
    model.forward = model.forward_features
    try:
        yield
    finally:
        del model.forward


class CRDStrategy(Strategy):
    name = "crd"

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        if not isinstance(self.model, LowResolution):
            raise ValueError("strategy 'crd' trains a low-resolution student: set model.architecture='lowres_ldr' "
                             f"(got {self.cfg.model.architecture!r})")
        if not self.cfg.strategy.teacher:
            raise ValueError("strategy 'crd' needs strategy.teacher: the high-resolution model's run folder (best.pt)")
        path = self.trainer.resolve(self.cfg.strategy.teacher)
        best = path / "best.pt" if path.is_dir() or not path.suffix else path
        if not best.exists():
            raise FileNotFoundError(
                f"strategy 'crd': the high-resolution teacher {self.cfg.strategy.teacher!r} has no checkpoint "
                f"({best} not found); train it first (python -m training run {Path(self.cfg.strategy.teacher).name}) "
                "or set strategy.teacher")
        self.teacher = load_teacher(str(best), trainer.device)
        subnets = getattr(self.teacher, "subnets", [])
        if isinstance(self.teacher, LowResolution) or not subnets or not hasattr(subnets[0], "feature_channels"):
            raise ValueError(f"strategy 'crd': the teacher {self.cfg.strategy.teacher!r} must be a high-resolution "
                             "engine network whose subnets return features (an 'ldr' cascade), "
                             f"got {type(self.teacher).__name__} of {[type(s).__name__ for s in subnets]}")
        self.fst = FeatureShiftedTeacher(self.model.subnets[0].feature_channels, subnets[0].feature_channels,
                                         getattr(self.model.subnets[0], "pad_inside", False)).to(trainer.device)
        self.modules["fst"] = self.fst
        self.optimisers["fst"] = self.make_optimiser(self.fst.parameters(), self.cfg.optim.lr)

    def teacher_outputs(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The frozen HR model's total flow (2 mm voxels) and its first cascade's features (sharp inputs)."""
        with torch.no_grad(), self.autocast():
            flow, _, feats = self.teacher.forward_features(batch["fixed"], batch["moving"])
        return flow.float(), feats[0]

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        w = self.cfg.loss
        spacing = batch.get("spacing")
        t_flow, t_feats = self.teacher_outputs(batch)
        f, m = self.trainer.network_inputs(batch)
        shape = f.shape[2:]
        with self.autocast(), features_forward(self.model):  # through the DDP wrapper (trainer.net) when distributed
            flow, flows, feats = self.trainer.net(f, m)
            s_feats = feats[0]
            fst_low, fst_feats = self.fst(s_feats, t_feats)
        fst_flow = self.model.to_input_grid(fst_low.float(), shape)
        # the FST learns to register from fused features (its inputs are detached from the student)
        fst_terms = self.loss(batch, fst_flow, [fst_flow], teacher_flow=t_flow, weights={"dice": 0.0})
        # the student: the usual terms, flow distillation from the HR model, then CRD's terms
        terms = self.loss(batch, flow.float(), [x.float() for x in flows], teacher_flow=t_flow)
        if w.fst_flow:
            terms["fst_flow"] = flow_distillation_loss(flows[0].float(), fst_flow.detach(), spacing)
            terms["total"] = terms["total"] + w.fst_flow * terms["fst_flow"]
        if w.attention:
            terms["attention"] = attention_loss([s_feats[i] for i in ATTENTION_LEVELS],
                                                [fst_feats[i].detach() for i in ATTENTION_LEVELS])
            terms["total"] = terms["total"] + w.attention * terms["attention"]
        self.optimise(fst_terms["total"], "fst")
        self.optimise(terms["total"])
        logs = self.scalars(terms)
        logs.update({f"fst_{k}": v for k, v in self.scalars(fst_terms).items()})
        return logs
