"""The RCN teacher as the seed describes it (issue 27): unsupervised, reference architecture, >= 10x the student.

``networks/rcn.py``: the reference affine stem (det/ortho losses, 0.1 each, as RCN) and 3 dense VTN
cascades (6 levels, ``c = 16`` to 512 channels, learned upconvolution of features and flows, output
``20 / cascades``); 99 M parameters, 32x the 2-cascade LDR student. Trained from scratch with RCN's
free-form augmentation of the moving image (``data.free_form = (0.4, 5)``), global ``1 - CC`` on the
last cascade's warp and the diffusion regulariser on each dense cascade's own flow, on the precision
work's data (``ldr_precise``): half the steps same-subject pairs (identical, residual rigid, smooth
deformations; contrast, bias field, noise; their known answer is *not* used, the teacher stays
unsupervised) and half inter-subject pairs from Mindboggle and IXI. Selected on validation by
``dice_precise``. ``loop.minutes`` bounds one invocation; the same command resumes.
"""
from ..config import (DataConfig, ExperimentConfig, LoopConfig, LossConfig, ModelConfig, OptimConfig,
                      StrategyConfig)


def config() -> ExperimentConfig:
    return ExperimentConfig(
        description="RCN teacher, reference architecture (VTN affine stem + 3 dense VTN cascades, c=16, 99 M "
                    "parameters), unsupervised 1 - CC + 0.5 smoothness + 0.1 det + 0.1 ortho, free-form "
                    "augmentation; precision data (same-subject + Mindboggle/IXI inter-subject pairs)",
        data=DataConfig(task="mindboggle", same_subject=0.5, ixi_share=0.5, free_form=(0.4, 5)),
        model=ModelConfig(architecture="vtn_ref", cascades=3, affine_subnet=True, kwargs={"channels": 16}),
        loss=LossConfig(similarity="cc", smooth=0.5, affine_det=0.1, affine_ortho=0.1),
        optim=OptimConfig(lr=1e-4),
        strategy=StrategyConfig(name="standard"),
        loop=LoopConfig(steps=20000, minutes=80, val_every=250, log_every=20, threads=2, select="dice_precise"),
    )
