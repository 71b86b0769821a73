"""CRD ablation (a), warm-started: the 4 mm student from the 2 mm default's weights, 1500 steps, no teacher."""
from ._lowres import lowres_student


def config():
    return lowres_student("low-resolution LDR student (2 cascades at 4 mm) warm-started from ldr_brain_v1's "
                          "weights, no teacher: 1 - CC + 0.5 smoothness", warm=True, name="standard")
