"""Control for ldr3_refinedistill: the same 3-cascade student, start, data and budget, no teacher."""
from ._base import STUDENT_STEPS, brain_student


def config():
    cfg = brain_student(3, "LDR student (3 cascades: ldr_brain_v1's two + a fresh one), no teacher: "
                           "1 - CC + 0.5 smoothness", warm=True, name="standard")
    cfg.loop.steps = 2 * STUDENT_STEPS
    return cfg
