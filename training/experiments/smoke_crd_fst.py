"""Smoke: CRD stage 1, the published feature-shifted teacher (shared LDR subnet, base 4) on synthetic 32^3 pairs."""
from ._base import smoke


def config():
    cfg = smoke("standard")
    cfg.description = "smoke CRD stage 1 (feature-shifted teacher) on synthetic 32^3 pairs"
    cfg.model.architecture = "fst_ldr"
    cfg.model.kwargs = {"base": 4}
    return cfg
