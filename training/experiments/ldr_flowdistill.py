"""Ablation (b): the same LDR student, plain flow distillation from the label-aware RCN teacher."""
from ._base import BRAIN_TEACHER, brain_student


def config():
    cfg = brain_student(2, "LDR student (2 cascades), plain flow distillation (MSE, mm^2) from the RCN teacher",
                        name="distill", teacher=BRAIN_TEACHER)
    cfg.loss.distill = 0.01
    return cfg
