"""CRD stage 2 as published: the low-resolution student (2 LDR cascades at 4 mm, warm-started as
``crd_lowres_warm``) distilled from the frozen FST of ``crd_fst_pretrain`` by flow and raw attention-map
MSE only (the authors' ``fetch_loss``: no similarity, no smoothness term). ``distill = 1/12``: our flow
term sums mm^2 over the three axes (x 3) at 2 mm (x 4), the authors' is a mean of voxel^2.
"""
from ..config import ExperimentConfig
from ._lowres import lowres_student
from .crd_fst_pretrain import FST_RUN


def config() -> ExperimentConfig:
    cfg = lowres_student("low-resolution LDR student (2 cascades at 4 mm), warm-started from ldr_brain_v1's weights, "
                         "CRD as published: flow + raw attention-map distillation from the frozen pre-trained FST "
                         "(crd_fst_pretrain), no similarity term", warm=True, name="crd_published", teacher=FST_RUN)
    cfg.loss.similarity_weight = 0.0
    cfg.loss.smooth = 0.0
    cfg.loss.distill = 1.0 / 12.0
    cfg.loss.attention = 1.0
    return cfg
