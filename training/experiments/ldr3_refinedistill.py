"""A 3-cascade LDR student distilled from the refined teacher (ldr_brain_v1 + per-pair Refine).

The 2-cascade student followed the refined teacher only a quarter of the way (RESULTS.md, issue 7):
capacity, not the teacher, limited it. This student has one more cascade: ldr_brain_v1's two
(``trainer.cascade_state``) plus a fresh third that starts near the identity, so it starts at
v1's accuracy. Same data, refined flows (reused from training/cache/refined_teacher/), lr 1e-4;
2,400 steps. Its control without a teacher is ldr3_noteacher.
"""
from ._base import BRAIN_STUDENT_INIT, STUDENT_STEPS, brain_student


def config():
    cfg = brain_student(3, "LDR student (3 cascades: ldr_brain_v1's two + a fresh one), flow distillation (MSE, "
                           "mm^2) from ldr_brain_v1 + per-pair Refine", warm=True, name="distill",
                        teacher=BRAIN_STUDENT_INIT, teacher_refine=True)
    cfg.loss.distill = 1.0
    cfg.loop.steps = 2 * STUDENT_STEPS
    return cfg
