"""Control for ldr_refinedistill_warp: the same fixed-image warps, start, data and budget, no teacher."""
from ._base import brain_student
from .ldr_refinedistill_warp import WARP


def config():
    cfg = brain_student(2, "LDR student (2 cascades) from ldr_brain_v1, no teacher, fixed images smoothly warped",
                        name="standard")
    cfg.data.warp_fixed = WARP
    return cfg
