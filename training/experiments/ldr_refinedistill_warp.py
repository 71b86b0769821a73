"""ldr_refinedistill with new anatomies: every training pair's fixed image is smoothly warped.

Fitting the refined teacher on one pair takes a student most of the way (``python -m
training.studies.distill_capacity``) while 132 pairs of 12 subjects take it a quarter of the way: the limit is
inferring the teacher's flow on unseen anatomy, not holding it. Here each step's fixed image goes
through a random smooth warp ``psi`` (2.5 mm standard deviation per axis on control points 20 mm apart,
``data.warp_fixed``), a new anatomy, and the target is the cached refined flow of the original pair
composed with ``psi`` (exact, no refinement per step; training/augment.py). Otherwise as the weight-1
``ldr_refinedistill`` run (2 cascades from ldr_brain_v1, 1,200 steps, lr 1e-4). Control without a
teacher: ldr_warp.
"""
from ._base import BRAIN_STUDENT_INIT, brain_student

#: the fixed-image warp of this experiment and its control: (amplitude mm, control-point spacing mm)
WARP = (2.5, 20.0)


def config():
    cfg = brain_student(2, "LDR student (2 cascades) from ldr_brain_v1, flow distillation from ldr_brain_v1 + "
                           "per-pair Refine, fixed images smoothly warped (target composed exactly)",
                        name="distill", teacher=BRAIN_STUDENT_INIT, teacher_refine=True)
    cfg.loss.distill = 1.0
    cfg.data.warp_fixed = WARP
    return cfg
