"""A model bundle defines its task: everything task-specific is read from its model card.

* the network grid: ``input.size`` (x, y, z voxels), ``input.spacing`` (mm) and
  ``input.placement`` ('foreground' | 'image_centre' of the fixed image);
* the normalisation per input: ``input.normalisation`` (fixed, and moving unless
  ``input.moving_normalisation`` is given): ``percentile`` for MR/US, ``window`` (Hounsfield
  units) for CT;
* the affine stage: ``affine_stage`` (:class:`DeepRegLib.affine.AffineConfig` fields, among
  them ``metric`` 'correlation' | 'mattes' and ``initialisation`` 'moments' | 'geometry');
* the modality pair it expects: ``input.modalities`` = ``{"fixed": "US", "moving": "MR"}``;
* the written field at the grid's border: ``field.margin_voxels`` (0: tapered to zero inside the
  grid, for grids whose border is background; > 0: every sample kept and the field continued that
  many voxels beyond the grid, for grids that are the whole image).

Absent keys take the values of the brain models (percentile, foreground placement,
correlation, moments, tapered border), so existing cards such as ``ldr_brain_v1`` behave exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from ..affine import AffineConfig
from ..pipeline import InputSpec
from ..preprocess import Normalisation
from ..names import look_up_option

#: the card's block describing the written field beyond the network grid
FIELD_KEY = "field"

@dataclass(frozen=True)
class TaskSpec:
    """What a bundle's network expects and how its inputs are prepared (all from the card)."""

    name: str = "brain"
    input: InputSpec = field(default_factory=InputSpec)
    affine: AffineConfig = field(default_factory=AffineConfig)
    modalities: Dict[str, str] = field(default_factory=lambda: {"fixed": "T1", "moving": "T1"})
    expects: str = ""
    #: voxels the written field continues beyond the network grid (0: tapered inside it; see
    #: DeepRegLib.transforms.border_field); card key ``field.margin_voxels``
    field_margin: int = 0

    @property
    def multimodal(self) -> bool:
        return self.modalities.get("fixed") != self.modalities.get("moving")

    @classmethod
    def from_card(cls, card: dict) -> "TaskSpec":
        inp = card.get("input", {})
        mods = inp.get("modalities") or {"fixed": "T1", "moving": "T1"}
        return cls(name=str(card.get("task", "brain")), input=InputSpec.from_dict(inp),
                   affine=AffineConfig.from_card(card.get("affine_stage")),
                   modalities={"fixed": str(mods.get("fixed", "")), "moving": str(mods.get("moving", ""))},
                   expects=str(inp.get("expects", "")),
                   field_margin=int((card.get(FIELD_KEY) or {}).get("margin_voxels", 0)))

    def describe(self) -> str:
        n = self.input.normalisation
        mn = self.input.moving_normalisation or n
        size = "x".join(str(s) for s in self.input.size)
        return (f"task {self.name}: fixed {self.modalities.get('fixed')} / moving {self.modalities.get('moving')}; "
                f"grid {size} at {self.input.spacing:g} mm ({self.input.placement}); "
                f"normalisation fixed {n.kind} [{n.low:g}, {n.high:g}], moving {mn.kind} [{mn.low:g}, {mn.high:g}]; "
                f"affine metric {self.affine.metric}, init {self.affine.initialisation}, "
                f"{self.affine.iterations} iterations"
                + (f"; field continued {self.field_margin} voxels beyond the grid" if self.field_margin else ""))


#: the tasks DeepReg knows how to prepare, whether or not a model for them is bundled. A card's
#: own settings always win; these are what training uses and what an affine-only run falls back to.
BUILTIN_TASKS: Dict[str, TaskSpec] = {
    "brain": TaskSpec("brain", expects="skull-stripped T1-weighted brain MRI"),
    "prostate": TaskSpec(
        "prostate",
        InputSpec(spacing=0.4, size=(48, 64, 48), normalisation=Normalisation("percentile", 1.0, 99.0),
                  placement="image_centre"),
        # centre alignment of the two boxes; the Mattes MI affine after it lowered the gland Dice on
        # training cases 0, 3, ..., 21 (0.61 -> 0.50), so the optimisation is off (iterations=0)
        AffineConfig(spacing=0.8, iterations=0, metric="mattes", initialisation="geometry"),
        {"fixed": "US", "moving": "MR"}, "intra-patient prostate: transrectal ultrasound (fixed), MR (moving)",
        field_margin=4),  # the grid is the whole ultrasound image: its border must not be tapered
    "ct": TaskSpec(
        "ct",
        InputSpec(spacing=3.0, size=(64, 64, 48), normalisation=Normalisation("window", -1000.0, 1000.0),
                  placement="image_centre"),
        AffineConfig(metric="correlation"), {"fixed": "CT", "moving": "CT"}, "CT (Hounsfield units)",
        field_margin=4),
}


def builtin_task(name: str) -> TaskSpec:
    return BUILTIN_TASKS[look_up_option(name, sorted(BUILTIN_TASKS), "task")]


def card_tasks(card: dict) -> list:
    """The tasks a card says its model was made for: ``card["task"]`` and ``card["tasks"]`` (universal models)."""
    out = [card["task"]] if card.get("task") else []
    out += [t for t in card.get("tasks", []) if t not in out]
    return out or ["brain"]


def card_fragment(spec: TaskSpec) -> Dict[str, dict]:
    """The card keys that describe ``spec`` (``input``, ``affine_stage`` and, when not 0, ``field``), for bundle writers."""
    inp = spec.input.to_dict()
    inp["modalities"] = dict(spec.modalities)
    if spec.expects:
        inp["expects"] = spec.expects
    out = {"task": spec.name, "input": inp, "affine_stage": spec.affine.to_dict()}
    if spec.field_margin:
        out[FIELD_KEY] = {"margin_voxels": int(spec.field_margin),
                          "what": "the written displacement keeps every sample of the network grid and continues "
                                  "this many voxels beyond it, falling to zero (DeepRegLib.transforms.border_field)"}
    return out


def task_spec(bundle_or_card) -> TaskSpec:
    """:class:`TaskSpec` of a :class:`DeepRegLib.bundles.bundle.ModelBundle` or a card dict."""
    card: Optional[dict] = getattr(bundle_or_card, "card", bundle_or_card)
    return TaskSpec.from_card(card or {})
