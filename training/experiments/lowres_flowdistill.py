"""CRD ablation (b): the same low-resolution student (4 mm), plain flow distillation from the distilled 2 mm student (ldr_flowdistill)."""
from ._lowres import HR_TEACHER, lowres_student


def config():
    cfg = lowres_student("low-resolution LDR student (2 cascades at 4 mm), plain flow distillation (MSE, mm^2) "
                         "from the distilled 2 mm student (ldr_flowdistill)", name="distill", teacher=HR_TEACHER)
    cfg.loss.distill = 0.01
    return cfg
