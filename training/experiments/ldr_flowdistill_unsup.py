"""LDR student (2 cascades, from ldr_brain_v1), plain flow distillation from the unsupervised RCN teacher.

``teacher_rcn_v1stack_unsup`` (v1's cascades + one dense VTN cascade, 1 - CC + smoothness, no labels; best
checkpoint step 2,400) is the first RCN teacher clearly above the student at full resolution (0.642 / 0.508
subcortical / cortical vs 0.634 / 0.491; RESULTS.md). Unlike the refined teacher, it is itself a network
that infers its flows from the images of pairs it has not seen, so what it knows is inferable by
construction. Same student, data and budget as ldr_flowdistill (weight 0.03); ``loss.distill=0.3`` is the
stronger arm (``--run-dir training/runs/ldr_flowdistill_unsup_w0.3``).
"""
from ._base import brain_student

#: the unsupervised RCN teacher (training/experiments/teacher_rcn_v1stack_unsup.py)
UNSUP_TEACHER = "training/runs/teacher_rcn_v1stack_unsup"


def config():
    cfg = brain_student(2, "LDR student (2 cascades), plain flow distillation (MSE, mm^2) from the unsupervised "
                           "RCN teacher", name="distill", teacher=UNSUP_TEACHER)
    cfg.loss.distill = 0.03
    return cfg
