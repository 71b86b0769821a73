"""ALDK as published (not an experiment itself): the reference code's settings on top of a config.

Sources: the authors' public code (github.com/aioz-ai/LDR_ALDK, ``train.py`` arguments and
``network/recursive_cascaded_networks.py``) and the seed text (the method's blog posts).
"""
from __future__ import annotations

from ..config import ExperimentConfig

#: the reference's values: train.py --beta 0.1, --gamma 0.3, --lamb 0.1; the learning scheme
#: ``(steps + 1) % 3`` with the adversarial term off from step 8000 (of 20,000 x 5); critic
#: channels ``dis_c = [16, 32, 64, 128, 256]`` (five stride-2 convolutions, as in the seed text)
PUBLISHED = {"aldk_beta": 0.1, "gamma": 0.3, "gradient_penalty": 0.1, "adversarial_every": 3,
             "adversarial_until": 8000, "critic_layers": 5}


def aldk_published(cfg: ExperimentConfig, objective: str = "linear") -> ExperimentConfig:
    """``cfg`` (an adversarial student) with the published ALDK settings and the given critic objective
    (``'linear'``: the reference code's gap of logits; ``'squared'``: the seed text's squared gap of
    sigmoid scores). The critic is updated on the adversarial steps (every 3rd), once each."""
    s = cfg.strategy
    s.critic_objective = objective
    s.aldk_beta = PUBLISHED["aldk_beta"]
    s.adversarial_every = PUBLISHED["adversarial_every"]
    s.adversarial_until = PUBLISHED["adversarial_until"]
    s.critic_layers = PUBLISHED["critic_layers"]
    s.critic_every, s.critic_steps = PUBLISHED["adversarial_every"], 1
    cfg.loss.gamma = PUBLISHED["gamma"]
    cfg.loss.gradient_penalty = PUBLISHED["gradient_penalty"]
    return cfg
