"""The default brain student retrained not to invent deformation (issue 24: precision).

From ``ldr_brain_v2`` (same 2-cascade LDR network, so the same speed), half of the steps are
same-subject pairs with an exactly known answer (``training/data/same_subject.py``: identical
images, the residual rigid motion a rigid stage leaves, smooth diffeomorphic deformations of
0-3 mm velocity std on control points 24-60 mm apart, each image with its own contrast, bias field and noise), trained with the
mean end-point error to the known flow (mm) beside the similarity; the other half are inter-subject pairs,
drawn half from the 12 Mindboggle training brains and half from 170 IXI brains (skull-stripped by
their DLMUSE masks, ``training/data/ixi.py``). Selected on validation only: Mindboggle subjects 17,
18, 19 (label Dice) and known-answer pairs made from them and from the 15 IXI validation brains
(``dice_precise`` = Dice - 0.05 x mean known-answer error in mm).
"""
from ..config import (DataConfig, ExperimentConfig, LoopConfig, LossConfig, ModelConfig, OptimConfig,
                      StrategyConfig)

INIT = "Resources/models/ldr_brain_v2"


def config():
    return ExperimentConfig(
        description="LDR student (2 cascades) from ldr_brain_v2, precision training: same-subject pairs with a "
                    "known answer (identity, residual rigid, smooth deformations; contrast, bias, noise) + "
                    "inter-subject Mindboggle and IXI pairs",
        data=DataConfig(task="mindboggle", same_subject=0.5, ixi_share=0.5),
        model=ModelConfig(architecture="ldr", cascades=2, init=INIT),
        loss=LossConfig(similarity="cc", smooth=0.5, known_flow=0.5),
        optim=OptimConfig(lr=1e-4),
        strategy=StrategyConfig(name="standard"),
        loop=LoopConfig(steps=6000, val_every=200, log_every=20, threads=2, select="dice_precise"),
    )
