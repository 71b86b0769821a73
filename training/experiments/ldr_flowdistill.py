"""Ablation (b): the same LDR student, plain flow distillation from the label-aware RCN teacher."""
from ._base import BRAIN_TEACHER, brain_student


def config():
    cfg = brain_student(2, "LDR student (2 cascades), plain flow distillation (MSE, mm^2) from the RCN teacher",
                        name="distill", teacher=BRAIN_TEACHER)
    # at the start (ldr_brain_v1 vs the teacher, 11 training pairs) the term is 0.78 mm^2 and 1 - CC is 0.022:
    # 0.03 makes them about equal (RESULTS.md)
    cfg.loss.distill = 0.03
    return cfg
