"""CRD ablation (a): the same low-resolution student (4 mm), same budget, no teacher (1 - CC + smoothness)."""
from ._lowres import lowres_student


def config():
    return lowres_student("low-resolution LDR student (2 cascades at 4 mm), no teacher: 1 - CC + 0.5 smoothness",
                          name="standard")
