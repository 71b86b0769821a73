"""The RCN teacher, unsupervised: an affine subnet and 3 dense VTN subnets, 1 - CC + smoothness."""
from ..config import DataConfig, ExperimentConfig, LoopConfig, LossConfig, ModelConfig, OptimConfig


def config() -> ExperimentConfig:
    return ExperimentConfig(
        description="RCN teacher: VTN affine + 3 dense VTN cascades (base 20), unsupervised 1 - CC + 0.5 smoothness",
        data=DataConfig(task="mindboggle"),
        model=ModelConfig(architecture="vtn", cascades=3, affine_subnet=True, kwargs={"base": 20}),
        loss=LossConfig(similarity="cc", smooth=0.5),
        optim=OptimConfig(lr=1e-4),
        loop=LoopConfig(steps=20000, val_every=200),
    )
