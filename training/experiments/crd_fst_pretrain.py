"""CRD stage 1 as published: pre-train the feature-shifted teacher (``networks/fst.py``).

One LDR subnet shared by the 2 mm pair and its 4 mm block average, its decoder features shifted one
level and fused by a decoder that outputs a 2 mm flow; trained as any registration network
(1 - CC + 0.5 smoothness) on the brain students' data. The shared subnet starts from the default
model's first cascade (``ldr_brain_v3``, fine-tuned with the fusion decoder: ``prefix_frozen=False``);
the fusion decoder from scratch (its flow head near zero). Stage 2: ``crd_published``.
"""
from ..config import ExperimentConfig
from ._base import brain_student

#: where stage 2 finds the frozen FST
FST_RUN = "training/runs/crd_fst_pretrain"


def config() -> ExperimentConfig:
    cfg = brain_student(2, "CRD stage 1: feature-shifted teacher (one LDR subnet shared by the 2 mm and 4 mm inputs, "
                           "decoder features shifted one level and fused, 2 mm flow), from ldr_brain_v3's first cascade",
                        warm=False)
    cfg.model.architecture = "fst_ldr"
    cfg.model.cascades = 1
    cfg.model.prefix = "Resources/models/ldr_brain_v3"
    cfg.model.prefix_frozen = False
    cfg.optim.lr = 1e-4
    cfg.loop.steps, cfg.loop.val_every, cfg.loop.minutes = 1500, 100, 0
    return cfg
