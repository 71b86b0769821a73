"""LDR student distilled from a refined teacher: ldr_brain_v1 followed by per-pair instance optimisation.

The teacher is the bundled network plus the engine's Refine (local NCC, diffeomorphic velocity
update; training/networks/refined_teacher.py), which on the validation brains is 0.666 / 0.553 subcortical /
cortical Dice against the network's 0.634 / 0.491: a clearly better teacher than any trained RCN here.
Same student, data, budget and start as ldr_flowdistill (2 cascades from ldr_brain_v1, 1200 steps,
lr 1e-4); the refined flows are computed once per training pair (~8 s each on one core) and kept under
training/cache/refined_teacher/.
"""
from ._base import BRAIN_STUDENT_INIT, brain_student


def config():
    cfg = brain_student(2, "LDR student (2 cascades) from ldr_brain_v1, flow distillation (MSE, mm^2) from "
                           "ldr_brain_v1 + per-pair Refine (instance optimisation)", name="distill",
                        teacher=BRAIN_STUDENT_INIT, teacher_refine=True)
    cfg.loss.distill = 0.1  # the refined teacher is much better than the student: weighted above ldr_flowdistill's 0.03
    return cfg
