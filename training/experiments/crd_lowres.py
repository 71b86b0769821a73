"""CRD: the low-resolution LDR student (4 mm, 2 cascades) with the feature-shifted teacher built on the distilled 2 mm student (ldr_flowdistill)."""
from ..config import ExperimentConfig
from ._lowres import HR_TEACHER, lowres_student


def crd_config(warm: bool = False) -> ExperimentConfig:
    """The CRD student from scratch, or warm-started from the 2 mm default's weights (``warm``)."""
    start = "warm-started from ldr_brain_v1's weights, " if warm else ""
    cfg = lowres_student(f"low-resolution LDR student (2 cascades at 4 mm), {start}cross-resolution distillation "
                         "(FST, attention maps at 3 scales, flow distillation) from the distilled 2 mm student (ldr_flowdistill)",
                         warm=warm, name="crd", teacher=HR_TEACHER)
    cfg.loss.distill = 0.01
    cfg.loss.fst_flow = 0.01
    cfg.loss.attention = 0.1  # AT starts near 0.5 (random FST); 0.1 keeps it below the similarity term
    return cfg


def config() -> ExperimentConfig:
    return crd_config(warm=False)
