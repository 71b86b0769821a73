"""Nested configuration dataclasses for every training run.

One :class:`ExperimentConfig` describes a run completely: data, network, losses,
optimiser, strategy (standard, distillation, adversarial, ...), curricula and the
loop.  Experiments (``training/experiments/<name>.py``) build one; the command line
overrides fields with ``--set section.field=value``; the resolved config is saved as
``config.json`` in the run folder and inside every checkpoint.
"""
from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


@dataclass
class DataConfig:
    """Which pairs, on which network grid (``size`` is ITK order x, y, z; ``spacing`` mm)."""

    task: str = "mindboggle"  # 'mindboggle' | 'synthhead' | 'prostate' | 'ct' | 'synthetic*' (training/data/tasks.py)
    spacing: float = 2.0
    size: Tuple[int, int, int] = (80, 96, 80)
    normalisation: str = "percentile"
    train_subjects: Optional[List[int]] = None  # None: the task's default split
    validation_subjects: Optional[List[int]] = None
    flip_lr: bool = True  # random left-right flip of both images (axis found from the grid)
    augment_affine: Tuple[float, float, float] = (0.0, 0.0, 0.0)  # moving image: max rotation deg, scale, shift mm (training/augment.py)
    free_form: Tuple[float, int] = (0.0, 5)  # RCN's moving-image free-form warp: max control displacement (fraction of side / 4), control points per axis (training/augment.py)
    warp_fixed: Tuple[float, float] = (0.0, 0.0)  # fixed image: random smooth warp, amplitude mm (std), control-point spacing mm
    synthetic_pairs: int = 8  # 'synthetic' task only
    pairs: int = 0  # 'synthhead' / 'ct': number of generated training pairs (0: the task's default)
    rerender: bool = False  # 'synthhead': every training step renders both images anew from their label maps (new random contrast)
    contrast_curriculum_steps: int = 0  # with rerender: images blend from one shared contrast (step 0) to random contrasts (this step on)
    same_anatomy: float = 0.0  # with rerender: share of training pairs whose moving image is rendered from the fixed label map (then warp_fixed deforms the fixed one)
    affine: Dict[str, Any] = field(default_factory=dict)  # DeepRegLib.affine.AffineConfig overrides
    cache_dir: str = "training/cache"
    # same-subject pairs with an exactly known answer (training/data/same_subject.py), 'mindboggle' task:
    same_subject: float = 0.0  # share of training steps whose pair is one brain under a known motion (0: none)
    same_subject_params: Dict[str, Any] = field(default_factory=dict)  # SameSubjectConfig overrides
    ixi_share: float = 0.0  # share of training steps drawn from the IXI brains (training/data/ixi.py) instead
    ixi_limit: int = 0  # use only the first N IXI subjects of each split (0: all; smoke runs)


@dataclass
class ModelConfig:
    """The network being trained: an engine architecture (``ldr``) or a training-only one (``vtn``)."""

    architecture: str = "ldr"
    cascades: int = 2
    kwargs: Dict[str, Any] = field(default_factory=dict)  # subnet constructor arguments
    affine_subnet: bool = False  # RCN: an affine subnet before the dense cascades (teachers)
    init: str = ""  # checkpoint whose model weights start a fresh run (fine-tuning)
    prefix: str = ""  # teachers: a trained engine network (bundle folder or run) whose cascades come first
    prefix_frozen: bool = True  # False: the prefix's cascades are fine-tuned with the new ones (end to end)


@dataclass
class LossConfig:
    """Weights of the named loss terms (0 switches a term off)."""

    similarity: str = "cc"  # a DeepRegLib.similarity name: 'cc' (global, the seed's) | 'ncc' (local) | 'mind' | 'mi'
    similarity_weight: float = 1.0  # weight of the similarity term (0: a pure distillation loss, as CRD's published student)
    ncc_window: int = 9  # voxels, for 'ncc'
    smooth: float = 0.5  # diffusion regulariser on each cascade's flow (dimensionless, physical units)
    dice: float = 0.0  # label-aware: soft Dice of warped moving labels vs fixed labels
    dice_labels_per_step: int = 16  # random subset of labels per step (memory)
    dice_sigmas: Tuple[float, ...] = ()  # multi-scale label Dice: Gaussian sigmas in voxels (() = unsmoothed only)
    distill: float = 0.0  # flow distillation: mean squared difference to the teacher, mm^2
    gamma: float = 0.5  # ALDK: L = gamma * l_rec + (1 - gamma) * l_dis (student side)
    gradient_penalty: float = 10.0  # ALDK / WGAN-GP lambda (critic side)
    attention: float = 0.0  # CRD: attention-map distillation from the feature-shifted teacher (dimensionless)
    fst_flow: float = 0.0  # CRD: first cascade's flow vs the feature-shifted teacher's flow, mm^2
    known_flow: float = 0.0  # pairs with a known answer (same-subject): mean end-point error to it, mm
    affine_det: float = 0.0  # RCN affine subnet: (det A - 1)^2 / 2 (the reference's 0.1); needs model.affine_subnet
    affine_ortho: float = 0.0  # RCN affine subnet: orthogonality of A (the reference's 0.1); needs model.affine_subnet


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: Tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    critic_lr: float = 1e-4
    grad_clip: float = 0.0  # 0: none


@dataclass
class StrategyConfig:
    """How one step updates the weights.

    ``standard``: similarity + regularisers (+ Dice). ``distill``: plus flow distillation
    from a frozen teacher. ``adversarial``: ALDK (student vs a flow critic, teacher flows
    as the real samples). ``crd``: cross-resolution distillation of a low-resolution student
    (``training/strategies/crd.py``).
    """

    name: str = "standard"  # 'standard' | 'distill' | 'adversarial' | 'crd' | 'crd_published' | continual ones
    teacher: str = ""  # checkpoint of the frozen teacher (run folder or .pt)
    critic_steps: int = 1  # critic updates per critic round
    critic_every: int = 2  # student steps per critic round (the student is updated more often)
    # ALDK as published (training/strategies/adversarial.py); the defaults keep the earlier runs' behaviour
    critic_objective: str = "squared"  # 'squared': ||D(s) - D(t)||^2 of sigmoid scores (seed text) | 'linear': D(t) - D(s) of logits (reference code)
    critic_layers: int = 6  # stride-2 convolutions of the critic: 5 is the seed's / reference's (16..256 channels), 6 the earlier runs'
    aldk_beta: Optional[float] = None  # gradient penalty at beta * phi_t + (1 - beta) * phi_s: fixed beta (reference 0.1), None: U(0, 1) per sample
    adversarial_every: int = 1  # the adversarial term (and critic rounds) only on steps with step % every == 0 (reference 3); other steps: l_rec alone
    adversarial_until: int = 0  # no adversarial term from this step on (reference 8000 of 100,000); 0: never off
    # continual-learning strategies (training/strategies/continual.py): 'sam' | 'replay' | 'reptile' | 'samcl'
    sam_rho: float = 0.05  # SAM neighbourhood radius
    sam_adaptive: bool = True  # ASAM: the perturbation scaled by |w| (scale-invariant)
    reptile_inner_steps: int = 5  # trainer steps per Reptile outer update
    reptile_beta: float = 0.5  # outer interpolation: w <- w0 + beta * (w_inner - w0)
    replay_weight: float = 1.0  # weight of the replayed pair's loss
    teacher_cache: bool = True  # keep each (pair, flip)'s teacher flow in memory: the frozen teacher runs once per key
    crd_attention: str = "raw"  # crd_published: 'raw' attention maps (the authors' MSE of channel sums of squares) | 'normalised' (L2-normalised maps, Zagoruyko & Komodakis, as the online 'crd' strategy)
    teacher_store: bool = False  # distill/adversarial: the frozen teacher's own flows kept on disk per (pair, flip), shared by every student of that teacher and data (<data.cache_dir>/teacher_flows/)
    teacher_refine: bool = False  # distill: the teacher's flow refined per pair by the engine's Refine (instance
    # optimisation, DeepRegLib.refine.RefineConfig defaults); kept under <data.cache_dir>/refined_teacher/ for reuse


@dataclass
class ContinualConfig:
    """A sequence of tasks, trained one after another (or jointly) by one trainer.

    Empty ``tasks``: an ordinary single-task run. Otherwise every task of ``tasks``
    (``training/data/tasks.py``) brings its own data, grid and loss weights; 'sequential'
    trains task t on steps ``[t * steps_per_task, (t + 1) * steps_per_task)``; 'joint' draws
    a task uniformly at every step (the same budget). After every ``steps_per_task`` steps
    all tasks are evaluated: one row of the accuracy matrix (``<run>/continual.json``).
    """

    tasks: List[str] = field(default_factory=list)
    mode: str = "sequential"  # 'sequential' | 'joint'
    steps_per_task: int = 1000
    buffer_size: int = 0  # experience-replay buffer (pairs, reservoir sampling); replay/samcl strategies
    size: Optional[Tuple[int, int, int]] = None  # override every task's grid size (smoke runs)


@dataclass
class CurriculumConfig:
    """Curricula (schedules applied by callbacks); all off by default."""

    blur_sigma_mm: float = 0.0  # input blur: start sigma (mm), annealed to 0
    blur_steps: int = 0  # steps over which the sigma reaches 0
    blur_shape: str = "linear"  # 'linear' | 'cosine' | 'step'
    dropout_floor: float = 1.0  # curriculum dropout: retain probability annealed 1 -> floor
    dropout_gamma: float = 1e-3  # rate of the exponential annealing, per step
    smoothing_sigma: float = 0.0  # curriculum by smoothing: feature blur sigma (voxels), start
    smoothing_decay: float = 0.9  # multiplied every smoothing_every steps
    smoothing_every: int = 0


@dataclass
class LoopConfig:
    steps: int = 1000
    minutes: float = 0.0  # wall-clock limit of one invocation (0: none); resume continues
    batch_size: int = 1
    val_every: int = 200
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # 'auto' (cuda when available) | 'cpu' | 'cuda'
    amp: bool = True  # automatic mixed precision on cuda only
    threads: int = 2
    select: str = "dice"  # validation key that picks best.pt ('dice' | 'dice_precise': Dice - 0.05 * known-answer error mm)


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    description: str = ""
    run_dir: str = ""  # default training/runs/<name>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)


def to_dict(cfg: Any) -> Dict[str, Any]:
    """JSON-ready nested dict (tuples become lists)."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(cfg)


def from_dict(d: Dict[str, Any], cls: type = ExperimentConfig) -> Any:
    """Inverse of :func:`to_dict` (unknown keys are an error, so stale configs are noticed)."""
    kwargs = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in d.items():
        if k not in names:
            raise KeyError(f"{cls.__name__} has no field {k!r}")
        default = getattr(cls(), k)
        if dataclasses.is_dataclass(default):
            kwargs[k] = from_dict(v, type(default))
        elif isinstance(default, tuple):
            kwargs[k] = tuple(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def _parse_value(text: str, current: Any) -> Any:
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(current, bool):
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(current, float) and isinstance(value, int):
        return float(value)
    if isinstance(current, tuple):
        return tuple(value)
    return value


def apply_overrides(cfg: ExperimentConfig, overrides: List[str]) -> ExperimentConfig:
    """Apply ``section.field=value`` strings (e.g. ``optim.lr=1e-4``) in place; returns ``cfg``."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.field=value")
        key, text = item.split("=", 1)
        target = cfg
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not hasattr(target, p):
                raise KeyError(f"unknown config section {p!r} in {key!r}")
            target = getattr(target, p)
        leaf = parts[-1]
        if not dataclasses.is_dataclass(target) or leaf not in {f.name for f in dataclasses.fields(target)}:
            raise KeyError(f"unknown config field {key!r}")
        setattr(target, leaf, _parse_value(text, getattr(target, leaf)))
    return cfg
