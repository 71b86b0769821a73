"""Shared settings of the low-resolution (CRD) experiments: the brain students' data, loss, budget."""
from __future__ import annotations

from ..config import ExperimentConfig
from ._base import BRAIN_STUDENT_INIT, brain_student, smoke

#: the frozen high-resolution model the CRD student and ablation (b) learn from (the distilled 2 mm default)
HR_TEACHER = "training/runs/ldr_flowdistill"  # the distilled 2 mm student (not bundled: RESULTS.md)
#: the low-resolution student: LDR cascades on the network grid average-pooled 2x (2 mm -> 4 mm)
LOWRES = {"architecture": "lowres_ldr", "kwargs": {"factor": 2}}
#: the warm-started students' subnets run on the 40 x 48 x 40 grid as it is (odd sides padded inside,
#: :class:`DeepRegLib.models.LDRSubnet`), instead of padded to 48^3 as the from-scratch runs were
WARM_KWARGS = {"factor": 2, "pad_inside": True}


#: the 2 mm weights a warm-started low-resolution student's inner cascade starts from
WARM_INIT = BRAIN_STUDENT_INIT
#: the bundled low-resolution model (crd_lowres_warm's best checkpoint), where its follow-ups start
LOWRES_BUNDLE = "Resources/models/crd_lowres_brain"


def lowres_student(description: str, warm: bool = False, **strategy) -> ExperimentConfig:
    """:func:`brain_student` (2 cascades, same data and loss) at 4 mm.

    From scratch (``warm=False``): 6000 steps, lr 2e-4. Warm-started (``warm=True``): the inner
    4 mm cascade starts from the 2 mm default's weights (:data:`WARM_INIT`, same architecture;
    unchanged they already score 0.446 grid Dice at 4 mm, as much as 6000 steps from scratch),
    then 1500 steps at lr 1e-4, as the 2 mm students were fine-tuned; subnets with ``pad_inside``.
    """
    cfg = brain_student(2, description, **strategy)
    if warm:
        cfg.model.init = WARM_INIT
        cfg.optim.lr, cfg.loop.steps, cfg.loop.val_every = 1e-4, 1500, 100
    else:
        cfg.model.init = ""
        cfg.optim.lr, cfg.loop.steps, cfg.loop.val_every = 2e-4, 6000, 200
    cfg.model.architecture = LOWRES["architecture"]
    cfg.model.kwargs = dict(WARM_KWARGS if warm else LOWRES["kwargs"])
    return cfg


def lowres_smoke(strategy: str = "standard", **kw) -> ExperimentConfig:
    """:func:`smoke` with the low-resolution student (synthetic 32^3 at 2 mm -> 16^3 at 4 mm)."""
    cfg = smoke(strategy, **kw)
    cfg.model.architecture = LOWRES["architecture"]
    cfg.model.kwargs = dict(LOWRES["kwargs"])
    return cfg
