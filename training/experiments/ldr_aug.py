"""ldr_noteacher plus affine augmentation of the moving image (generalisation check).

Fitting one training pair alone takes the student far closer to the refined teacher than training on
all 132 pairs does (``python -m training.distill_capacity``, RESULTS.md issue 7), so the student's
architecture can hold much more than it learns to infer; with 12 training subjects, generalisation is
a candidate limit. Same start, loss, data and budget as ldr_noteacher, plus a random rotation (up to
5 degrees per axis), scaling (up to 5 %) and shift (up to 2 mm) of each training pair's moving image,
in physical units (training/augment.py): the residual misalignment an affine stage leaves.
"""
from ._base import brain_student


def config():
    cfg = brain_student(2, "LDR student (2 cascades) from ldr_brain_v1, no teacher, affine augmentation of the "
                           "moving image (5 deg, 5 %, 2 mm)", name="standard")
    cfg.data.augment_affine = (5.0, 0.05, 2.0)
    return cfg
