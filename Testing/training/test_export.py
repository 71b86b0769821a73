"""Export records: the lineage of the starting weights, licences without repeats, settings carried over."""
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_lineage_ends_at_a_bundle_or_says_what_is_missing():
    from training.export import lineage
    assert lineage("Resources/models/ldr_brain_v2") == [{"from": "Resources/models/ldr_brain_v2", "bundle": "ldr_brain_v2"}]
    gone = lineage("training/runs/no_such_run/best.pt")
    assert len(gone) == 1 and "not found" in gone[0]["note"]
    assert lineage("") == []


def test_inherited_licence_adds_only_what_is_missing():
    from training.export import with_inherited_licence
    v2 = "Resources/models/ldr_brain_v2"
    own = json.loads((REPO / v2 / "card.json").read_text())["licence"]
    assert with_inherited_licence(own + "; IXI images: CC BY-SA 3.0", v2) == own + "; IXI images: CC BY-SA 3.0"
    added = with_inherited_licence("IXI images: CC BY-SA 3.0", v2)
    assert added.startswith("IXI images: CC BY-SA 3.0; weights initialised from " + v2) and added.count(own.split(";")[0]) == 1


def _inherited_plus_changes(card: dict, predecessor: dict) -> dict:
    """The default refinement ``card`` should have: ``predecessor``'s plus each change ``card`` records
    (``refinement.default_changes``, in order), each written by a benchmark with its measurements."""
    expected = dict(predecessor["refinement"]["default"])
    for change in card["refinement"]["default_changes"]:
        assert change["by"].startswith("python benchmarks/") and change["measured"], change
        expected.update(change["changes"])
    return expected


def test_the_default_carries_its_predecessors_inference_settings():
    """ldr_brain_v3 was exported with --settings-from ldr_brain_v2: the same affine stage and default
    refinement, said in the card, and its lineage leads to ldr_brain_v2. Its affine stage later gained a
    2 mm level, chosen on validation by benchmarks/tune_affine.py, and its default refinement changes chosen by
    benchmarks (refinement.default_changes), which the card records."""
    v3 = json.loads((REPO / "Resources/models/ldr_brain_v3/card.json").read_text())
    v2 = json.loads((REPO / "Resources/models/ldr_brain_v2/card.json").read_text())
    stage = dict(v3["affine_stage"])
    tuned, fine = stage.pop("tuned"), stage.pop("fine_spacing")
    assert v3["settings_from"] == "ldr_brain_v2" and stage == v2["affine_stage"]
    assert fine == 2.0 and "benchmarks/tune_affine.py" in tuned["by"] and tuned["chosen"] == "fine2"
    # the default refinement: v2's plus each change the card records, chosen by a benchmark on validation
    assert v3["refinement"]["default"] == _inherited_plus_changes(v3, v2)
    assert v3["refinement"]["carried_from"] == "ldr_brain_v2"
    assert v3["training"]["lineage"][-1]["bundle"] == "ldr_brain_v2"
    assert "--settings-from ldr_brain_v2" in v3["training"]["export"]
    assert v3["licence"].count("Mindboggle team") == 1 and "IXI" in v3["licence"]


def test_the_default_v4_is_v3_trained_on_larger_known_deformations():
    """ldr_brain_v4 (the default since 2026-12-04) was exported from the ldr_precise_wide run with
    --settings-from ldr_brain_v3: v3's affine stage, v3's default refinement plus the changes its own card
    records (each chosen by a benchmark on validation), weights initialised from v3, and known deformations
    up to a 9 mm velocity std in its training config."""
    v4 = json.loads((REPO / "Resources/models/ldr_brain_v4/card.json").read_text())
    v3 = json.loads((REPO / "Resources/models/ldr_brain_v3/card.json").read_text())
    assert v4["settings_from"] == "ldr_brain_v3" and v4["affine_stage"] == v3["affine_stage"]
    assert v4["refinement"]["default"] == _inherited_plus_changes(v4, v3)
    assert v4["refinement"]["carried_from"] == "ldr_brain_v3"
    assert v4["training"]["lineage"][0]["bundle"] == "ldr_brain_v3"
    config = v4["training"]["config"]
    assert config["name"] == "ldr_precise_wide" and config["data"]["same_subject_params"] == {"max_amplitude_mm": 9.0}
    assert v4["licence"].count("Mindboggle team") == 1 and "IXI" in v4["licence"]
