"""One network, several tasks: ``NAME:TASK`` model references and a card's ``task_settings``.

The test bundle joins the bundled brain default (its card's top level: grid, normalisation, affine
stage, refinement) and the prostate specialist's settings (``task_settings["prostate"]``), over the
brain model's weights. Each task must run exactly as a single-task bundle with those settings and
weights does, through ``register()``, the CLI, ``deepreg batch`` and the Slicer model list.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from DeepRegLib import DEFAULT_MODEL
from DeepRegLib.bundles import (TASK_KEYS, TASK_SETTINGS_KEY, card_refinement, list_models, load_bundle, split_reference,
                                with_task)
from DeepRegLib.errors import ModelNotFoundError

PROSTATE = "prostate_mrus"


def _write_bundle(folder: Path, card: dict, weights_from: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(weights_from / card["weights"], folder / card["weights"])
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """``multi``: brain (default) + prostate over the default model's weights; ``prostate_only``: the
    same weights with the prostate settings alone (what ``multi:prostate`` must equal)."""
    root = tmp_path_factory.mktemp("models")
    brain, prostate = load_bundle(DEFAULT_MODEL), load_bundle(PROSTATE)
    per_task = {k: prostate.card[k] for k in TASK_KEYS if k in prostate.card}
    card = dict(brain.card, name="multi", task="brain", tasks=["brain", "prostate"],
                **{TASK_SETTINGS_KEY: {"prostate": per_task}})
    single = {**{k: v for k, v in brain.card.items() if k not in TASK_KEYS}, **per_task, "name": "prostate_only"}
    return {"multi": _write_bundle(root / "multi", card, brain.path),
            "prostate_only": _write_bundle(root / "prostate_only", single, brain.path)}


def test_references():
    assert split_reference("universal:prostate") == ("universal", "prostate")
    assert split_reference("universal") == ("universal", None)
    assert split_reference("C:\\models\\x") == ("C:\\models\\x", None)  # a Windows path is not a task
    assert with_task("universal", "ct") == "universal:ct" and with_task("universal", None) == "universal"
    assert with_task(None, "brain") == f"{DEFAULT_MODEL}:brain"
    with pytest.raises(ModelNotFoundError, match="give the task once"):
        with_task("universal:prostate", "ct")


def test_task_views_take_their_tasks_settings(models):
    multi = load_bundle(str(models["multi"]))
    assert multi.tasks == ["brain", "prostate"] and multi.default_task == "brain"
    assert load_bundle(str(models["multi"]), task="brain") is not None
    view = load_bundle(f"{models['multi']}:prostate")
    assert view.name == "multi:prostate" and view.task.name == "prostate"
    assert view.input_spec == load_bundle(PROSTATE).input_spec != multi.input_spec
    assert view.task.affine == load_bundle(PROSTATE).task.affine and view.task.multimodal
    assert card_refinement(view.card).similarity == "mi" and card_refinement(multi.card).similarity == "ncc"
    assert view.tasks == ["prostate", "brain"]  # and back again
    back = view.for_task("brain")
    assert back.input_spec == multi.input_spec and card_refinement(back.card) == card_refinement(multi.card)
    assert load_bundle(str(models["multi"]), task="prostate").card == view.card
    with pytest.raises(ModelNotFoundError, match="not made for task 'ct'; its tasks: brain, prostate"):
        load_bundle(str(models["multi"]), task="ct")
    with pytest.raises(ModelNotFoundError, match="not made for task 'brain'"):
        load_bundle(PROSTATE, task="brain")  # a specialist serves its own task only
    assert load_bundle(PROSTATE, task="prostate").name == PROSTATE
    # a task without its own refinement does not inherit the default task's
    card = json.loads((models["multi"] / "card.json").read_text())
    card[TASK_SETTINGS_KEY]["prostate"].pop("refinement")
    from DeepRegLib.bundles import ModelBundle
    assert card_refinement(ModelBundle("m", models["multi"], card).for_task("prostate").card) is None
    lines = view.details()
    assert any("one of the tasks prostate, brain" in line and "multi:TASK" in line for line in lines), lines


def test_listing_and_slicer_model_list(models, monkeypatch):
    monkeypatch.setenv("DEEPREG_MODELS_PATH", str(models["multi"].parent))
    assert "multi:prostate" not in list_models()
    views = list_models(task_views=True)
    assert views["multi:prostate"].task.name == "prostate" and views["multi"].task.name == "brain"
    from DeepRegLib.demos.prostate import prostate_models
    found = prostate_models()
    assert found.index(PROSTATE) < found.index("multi:prostate")  # specialists first: the demo's default
    from DeepRegLib.slicer_adapter.mrml import list_model_cards, model_tooltip
    cards = list_model_cards()
    assert cards["multi:prostate"]["task"] == "prostate" and cards["multi"]["task"] == "brain"
    assert "MR (moving) -> US (fixed)" in model_tooltip(cards["multi:prostate"])


def test_models_command_lists_each_task(models, monkeypatch, capsys):
    from DeepRegLib.cli import main
    monkeypatch.setenv("DEEPREG_MODELS_PATH", str(models["multi"].parent))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    gland = load_bundle(PROSTATE).card["accuracy"]["validation"]["default"]["gland_dice"]
    line = next(x for x in out.splitlines() if x.strip().startswith("multi:prostate:"))
    assert f"validation gland Dice {gland:.3f}" in line
    assert "mutual information" in out.split("multi:prostate:")[1].split("prostate_only")[0]


def _displacement(res) -> np.ndarray:
    return np.asarray(res.displacement)


def test_each_task_registers_as_its_single_task_bundle(models, sample_pair):
    from DeepRegLib.demos.prostate import load_case, sample_paths
    from DeepRegLib.inference import register
    brain_multi = register(sample_pair["fixed"]["image"], sample_pair["moving"]["image"], model=str(models["multi"]), device="cpu")
    brain_default = register(sample_pair["fixed"]["image"], sample_pair["moving"]["image"], model=DEFAULT_MODEL, device="cpu")
    assert brain_multi.refinement == "model default"
    np.testing.assert_array_equal(_displacement(brain_multi), _displacement(brain_default))

    fixed, moving, _, _ = load_case(sample_paths())
    view = register(fixed, moving, model=str(models["multi"]), task="prostate", device="cpu")
    single = register(fixed, moving, model=str(models["prostate_only"]), device="cpu")
    assert view.model == "multi:prostate" and any("task prostate: fixed US / moving MR" in x for x in view.log)
    assert view.grid.spacing == pytest.approx((0.4, 0.4, 0.4))
    np.testing.assert_array_equal(_displacement(view), _displacement(single))
    assert np.abs(_displacement(view)).max() > 0.5  # mm: the network and MI refinement moved it


def test_cli_task_option(models, tmp_path, capsys):
    from DeepRegLib.cli import main
    from DeepRegLib.demos.prostate import sample_paths
    p = sample_paths()
    out = tmp_path / "t.h5"
    assert main(["register", "--fixed", str(p["fixed"]), "--moving", str(p["moving"]), "--model", str(models["multi"]),
                 "--task", "prostate", "--output-transform", str(out), "--network-only", "--device", "cpu"]) == 0
    assert out.is_file() and "model multi:prostate" in capsys.readouterr().err
    assert main(["register", "--fixed", str(p["fixed"]), "--moving", str(p["moving"]), "--model", str(models["multi"]),
                 "--task", "ct", "--output-transform", str(out)]) == 2
    assert "not made for task 'ct'" in capsys.readouterr().err


def test_batch_keeps_the_task_with_a_bundle_folder(models, tmp_path):
    """A folder reference with a task reaches the workers whole (resolved folder + ``:TASK``)."""
    pytest.importorskip("distributed", reason="deepreg batch needs dask[distributed] (the 'batch' extra)")
    from DeepRegLib.batch.runner import BatchConfig, Pair, run_batch
    from DeepRegLib.demos.prostate import sample_paths
    p = sample_paths()
    rep = run_batch([Pair("case25", str(p["fixed"]), str(p["moving"]))], tmp_path / "out",
                    BatchConfig(model=f"{models['multi']}:prostate", device="cpu", refine=False, workers=1),
                    progress=False)
    rec = rep.records[0]
    assert rec["status"] == "ok", rec
    assert rec["model"] == "multi:prostate" and rep.summary["run"]["model"] == f"{models['multi'].resolve()}:prostate"


def test_card_writers_write_into_the_task_they_measured(models, tmp_path):
    """Benchmarks and refinement choices write a task view's figures into its ``task_settings`` entry."""
    from DeepRegLib.bundles import update_card
    folder = tmp_path / "m"
    shutil.copytree(models["multi"], folder)
    view = load_bundle(f"{folder}:prostate")
    update_card(view, {"accuracy": {"gland": 0.7}, "refinement": {"default": {"max_steps": 4, "similarity": "mi"}}})
    update_card(load_bundle(str(folder)), {"speed": {"register_s_median": 0.5}})
    card = json.loads((folder / "card.json").read_text())
    assert card[TASK_SETTINGS_KEY]["prostate"]["accuracy"] == {"gland": 0.7} and card["speed"] == {"register_s_median": 0.5}
    assert "gland" not in json.dumps(card.get("accuracy", {}))
    assert card_refinement(load_bundle(f"{folder}:prostate").card).max_steps == 4
    assert card_refinement(load_bundle(str(folder)).card).similarity == "ncc"
