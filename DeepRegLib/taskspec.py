"""A model bundle defines its task: everything task-specific is read from its model card.

* the network grid: ``input.size`` (x, y, z voxels), ``input.spacing`` (mm) and
  ``input.placement`` ('foreground' | 'image_centre' of the fixed image);
* the normalisation per input: ``input.normalisation`` (fixed, and moving unless
  ``input.moving_normalisation`` is given): ``percentile`` for MR/US, ``window`` (Hounsfield
  units) for CT;
* the affine stage: ``affine_stage`` (:class:`DeepRegLib.affine.AffineConfig` fields, among
  them ``metric`` 'correlation' | 'mattes' and ``initialisation`` 'moments' | 'geometry');
* the modality pair it expects: ``input.modalities`` = ``{"fixed": "US", "moving": "MR"}``.

Absent keys take the values of the brain models (percentile, foreground placement,
correlation, moments), so existing cards such as ``ldr_brain_v1`` behave exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from .affine import AffineConfig
from .pipeline import InputSpec

@dataclass(frozen=True)
class TaskSpec:
    """What a bundle's network expects and how its inputs are prepared (all from the card)."""

    name: str = "brain"
    input: InputSpec = field(default_factory=InputSpec)
    affine: AffineConfig = field(default_factory=AffineConfig)
    modalities: Dict[str, str] = field(default_factory=lambda: {"fixed": "T1", "moving": "T1"})
    expects: str = ""

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
                   expects=str(inp.get("expects", "")))

    def describe(self) -> str:
        n = self.input.normalisation
        mn = self.input.moving_normalisation or n
        size = "x".join(str(s) for s in self.input.size)
        return (f"task {self.name}: fixed {self.modalities.get('fixed')} / moving {self.modalities.get('moving')}; "
                f"grid {size} at {self.input.spacing:g} mm ({self.input.placement}); "
                f"normalisation fixed {n.kind} [{n.low:g}, {n.high:g}], moving {mn.kind} [{mn.low:g}, {mn.high:g}]; "
                f"affine metric {self.affine.metric}, init {self.affine.initialisation}, "
                f"{self.affine.iterations} iterations")


def card_fragment(spec: TaskSpec) -> Dict[str, dict]:
    """The card keys that describe ``spec`` (``input`` and ``affine_stage``), for bundle writers."""
    inp = spec.input.to_dict()
    inp["modalities"] = dict(spec.modalities)
    if spec.expects:
        inp["expects"] = spec.expects
    return {"task": spec.name, "input": inp, "affine_stage": spec.affine.to_dict()}


def task_spec(bundle_or_card) -> TaskSpec:
    """:class:`TaskSpec` of a :class:`DeepRegLib.bundles.ModelBundle` or a card dict."""
    card: Optional[dict] = getattr(bundle_or_card, "card", bundle_or_card)
    return TaskSpec.from_card(card or {})
