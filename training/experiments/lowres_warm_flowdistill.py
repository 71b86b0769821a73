"""CRD ablation (b), warm-started: the 4 mm student from the 2 mm default's weights, plain flow distillation."""
from ._lowres import HR_TEACHER, lowres_student


def config():
    cfg = lowres_student("low-resolution LDR student (2 cascades at 4 mm) warm-started from ldr_brain_v1's weights, "
                         "plain flow distillation (MSE, mm^2) from the distilled 2 mm student (ldr_flowdistill)",
                         warm=True, name="distill", teacher=HR_TEACHER)
    cfg.loss.distill = 0.01
    return cfg
