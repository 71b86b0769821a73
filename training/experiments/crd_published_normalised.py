"""CRD stage 2 with normalised attention maps: ``crd_published`` (frozen FST, flow + attention distillation, no
similarity term) with the attention maps L2-normalised per sample (``strategy.crd_attention = 'normalised'``,
weight 0.1 as the online ``crd``). The published raw maps' MSE is ~10^3-10^4 at the start here (the FST's fused
activations and the student's differ in scale), so it outweighs the flow term by three orders of magnitude.
"""
from ..config import ExperimentConfig
from .crd_published import config as published


def config() -> ExperimentConfig:
    cfg = published()
    cfg.description = ("low-resolution LDR student (2 cascades at 4 mm), CRD stage 2 from the frozen FST "
                       "(crd_fst_pretrain): flow + L2-normalised attention-map distillation, no similarity term")
    cfg.strategy.crd_attention = "normalised"
    cfg.loss.attention = 0.1
    return cfg
