"""Export a training checkpoint as a model bundle: float16 weights + a JSON model card.

The card is written entirely from the checkpoint: the resolved experiment config, the
commands that really ran (recorded by the trainer at each invocation), the selection
metrics and, for distilled students, the teacher's own checkpoint. Nothing is typed by
hand. Accuracy and speed at full resolution are added by ``benchmarks/bench_register.py
--update-card``.

    python -m training export training/runs/ldr_aldk --name ldr_aldk_brain
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Dict, Optional

import torch

from DeepRegLib.bundles import CARD_FILE, KINDS, REFINEMENT_KEY, TASK_SETTINGS_KEY, load_bundle
from DeepRegLib.models import ARCHITECTURES, count_parameters

from .checkpoints import load_checkpoint
from .config import from_dict
from .curricula import describe as describe_curriculum
from .data import mindboggle
from .data.registry import affine_config, normalisation
from .networks import build_model

REPO = Path(__file__).resolve().parents[1]
TASKS = {
    "mindboggle": {"data": mindboggle.DESCRIPTION, "licence": mindboggle.LICENCE,
                   "expects": "skull-stripped T1-weighted brain MRI"},
    "synthetic": {"data": "synthetic ellipsoid pairs (training/data/synthetic.py)", "licence": "Apache-2.0",
                  "expects": "synthetic test images only"},
}


#: what each strategy means for a card reader (the distillation method a bundle was made with)
METHODS = {
    "standard": "no teacher: trained on its own loss",
    "distill": "flow distillation: mean squared difference (mm^2) to the frozen teacher's flow, plus its own loss",
    "adversarial": "LDR + ALDK: adversarial distillation of the frozen teacher's flows (WGAN-GP flow critic), "
                   "gamma * (1 - CC) + (1 - gamma) * critic gap",
    "crd": "cross-resolution distillation: a feature-shifted high-resolution teacher, attention-map and flow losses",
}


def _teacher_summary(path: str, refined: bool = False) -> Optional[dict]:
    """What the card says of the frozen teacher: a run's checkpoint, or a bundle folder (its card);
    ``refined``: its flows were refined per pair by the engine's Refine (``strategy.teacher_refine``)."""
    summary = _teacher_checkpoint_summary(path)
    if refined:
        from DeepRegLib.refine import RefineConfig
        summary["refined"] = {"by": "DeepRegLib.refine.refine_flow, per training pair (instance optimisation)",
                              "config": RefineConfig().to_dict()}
    return summary


def _teacher_name(teacher: dict) -> str:
    name = teacher.get("experiment") or teacher.get("bundle") or teacher["checkpoint"]
    return name + (" + per-pair Refine" if teacher.get("refined") else "")


def _teacher_checkpoint_summary(path: str) -> dict:
    p = Path(path) if Path(path).is_absolute() else REPO / path
    if (p / CARD_FILE).exists():  # a bundle: its card, not a checkpoint
        card = load_bundle(str(p)).card
        return {"checkpoint": path, "bundle": card.get("name", p.name), "description": card.get("description"),
                "parameters": card.get("architecture", {}).get("parameters"),
                "training_commands": card.get("training", {}).get("commands")}
    p = p / "best.pt" if p.is_dir() else p
    if not p.exists():
        return {"checkpoint": path, "note": "checkpoint not present at export time"}
    ck = load_checkpoint(p)
    cfg = from_dict(ck["config"])
    net = build_model(cfg.model)
    return {"checkpoint": path, "experiment": cfg.name, "description": cfg.description,
            "parameters": count_parameters(net), "steps": ck["step"],
            "validation_grid": next((h for h in ck["history"] if h.get("dice") == ck["best_score"]), None),
            "commands": ck["commands"]}


#: the engine's name of a training task (``DeepRegLib.bundles.taskspec.BUILTIN_TASKS``, ``--task`` of the CLI)
ENGINE_TASKS = {"mindboggle": "brain"}


def _task_fragment(cfg, task: str) -> dict:
    """``task``, ``input`` and ``affine_stage`` card keys of one task of a run, as the engine reads them."""
    from DeepRegLib.bundles.taskspec import BUILTIN_TASKS, TaskSpec, card_fragment

    from .data.registry import task_input
    from .data.tasks import TASKS as TASK_INFO, run_task_config
    info = TASK_INFO[task]
    spec, affine = task_input(run_task_config(cfg, task))
    name = ENGINE_TASKS.get(task, task)
    builtin = BUILTIN_TASKS.get(name)
    frag = card_fragment(TaskSpec(name, spec, affine, {"fixed": info.modalities[0], "moving": info.modalities[1]},
                                  f"{info.modalities[1]} (moving) -> {info.modalities[0]} (fixed): {info.description}",
                                  field_margin=builtin.field_margin if builtin is not None else 0))
    frag["input"]["grid"] = "LPS-aligned box of size (x, y, z) voxels at `spacing` mm, placed by `placement`"
    frag["input"]["channels"] = ["fixed (normalised)", "moving after the affine stage (normalised)"]
    frag["affine_stage"] = {"method": "SimpleITK affine stage (DeepRegLib.affine)", **frag["affine_stage"]}
    return frag


def _task_card(cfg, ck: dict, task: Optional[str], all_tasks: bool = False) -> Optional[dict]:
    """Card keys for the continual-learning tasks (``training/data/tasks.py``): the task spec the
    engine reads (grid, normalisation, affine stage, modalities), the tasks trained on, licences and
    the accuracy matrix. ``None`` for the brain/synthetic runs, whose cards stay as they were.
    ``all_tasks``: one bundle for every task trained (``universal``): ``task`` is its default, each
    other task's grid and affine stage go to ``task_settings`` (``DeepRegLib.bundles``)."""
    from .data.tasks import TASKS as TASK_INFO
    trained = list(cfg.continual.tasks) or [cfg.data.task]
    task = task or trained[0]
    if task not in trained:
        raise ValueError(f"--task {task!r} was not trained by this run (tasks: {trained})")
    if not cfg.continual.tasks and task in TASKS:
        return None
    frag = _task_fragment(cfg, task)
    frag["tasks"] = [ENGINE_TASKS.get(task, task)]
    if all_tasks:
        others = [t for t in trained if t != task]
        frag["tasks"] += [ENGINE_TASKS.get(t, t) for t in others]
        frag[TASK_SETTINGS_KEY] = {ENGINE_TASKS.get(t, t): {k: v for k, v in _task_fragment(cfg, t).items() if k != "task"}
                                   for t in others}
    frag["trained_on"] = {t: {"data": TASK_INFO[t].description, "licence": TASK_INFO[t].licence,
                              "split": TASK_INFO[t].split} for t in trained}
    frag["licence"] = _data_licence(cfg)
    if cfg.continual.tasks:
        frag["continual"] = {k: v for k, v in (ck["extra"].get("continual") or {}).items() if k != "details"}
    return frag


def _data_licence(cfg) -> str:
    """The licence of the data a run trained on: its task's (brain and synthetic runs), or every task's of a
    continual run, as the card states it."""
    if not cfg.continual.tasks and cfg.data.task in TASKS:
        return TASKS[cfg.data.task]["licence"]
    from .data.tasks import TASKS as TASK_INFO
    return "; ".join(sorted({TASK_INFO[t].licence for t in (list(cfg.continual.tasks) or [cfg.data.task])}))


def _with_precision_data(cfg, task: dict) -> dict:
    """``task`` (data description and licence) with what a precision run adds: IXI brains and the
    same-subject pairs with a known answer (``training/data/ixi.py``, ``same_subject.py``)."""
    task = dict(task)
    if getattr(cfg.data, "ixi_share", 0.0) > 0:
        from .data import ixi
        task["data"] = (f"{task['data']}; {ixi.DESCRIPTION}: {len(ixi.split('train'))} training brains "
                        f"({ixi.PAIRS_PER_SUBJECT} partners each), {cfg.data.ixi_share:.0%} of the steps")
        task["licence"] = f"{task['licence']}; {ixi.LICENCE}"
    if getattr(cfg.data, "same_subject", 0.0) > 0:
        task["data"] = (f"{task['data']}; same-subject pairs with an exactly known flow (identical images, residual "
                        f"rigid motion, smooth deformations; contrast, bias field and noise changes), "
                        f"{cfg.data.same_subject:.0%} of the steps (training/data/same_subject.py)")
    return task


def _init_licence(init: str) -> Optional[str]:
    """The licence of the weights a run started from (``model.init``): a bundle's card licence, or that of
    the data a run checkpoint was trained on; None when there was no start or it cannot be read."""
    if not init:
        return None
    p = Path(init) if Path(init).is_absolute() else REPO / init
    if (p / CARD_FILE).exists():
        card = load_bundle(str(p)).card
        return str(card.get("licence") or card.get("training", {}).get("licence") or "") or None
    p = p / "best.pt" if p.is_dir() else p
    if not p.exists():
        return None
    cfg = from_dict(load_checkpoint(p)["config"])
    return "; ".join(x for x in (_data_licence(cfg), _init_licence(cfg.model.init)) if x) or None


def with_inherited_licence(licence: str, init: str) -> str:
    """``licence`` of the training data, plus that of the weights the run started from when it differs:
    weights fine-tuned from a model trained on CC BY-NC-SA data carry that licence too."""
    inherited = _init_licence(init)
    parts = [] if not inherited else [x for x in dict.fromkeys(s.strip() for s in inherited.split("; ")) if x]
    missing = [x for x in parts if x not in licence]
    if not missing:
        return licence
    return f"{licence}; weights initialised from {init}, whose licence adds: {'; '.join(missing)}"


def lineage(init: str, depth: int = 8) -> list:
    """The chain of weights a run started from: for each training checkpoint on the way, its path, the
    commands that made it and what it started from, ending at a bundle (its name) or an unreadable start."""
    chain: list = []
    while init and depth > 0:
        depth -= 1
        p = Path(init) if Path(init).is_absolute() else REPO / init
        if (p / CARD_FILE).exists():
            chain.append({"from": init, "bundle": load_bundle(str(p)).name})
            break
        p = p / "best.pt" if p.is_dir() else p
        if not p.exists():
            chain.append({"from": init, "note": "not found here (run folders are not in the repository)"})
            break
        ck = load_checkpoint(p)
        nxt = from_dict(ck["config"]).model.init
        chain.append({"from": init, "step": ck.get("step"), "commands": ck.get("commands"), "init": nxt})
        init = nxt
    return chain


def _split_ids(task: str, which: int) -> Optional[list]:
    """The task's training (``which=0``) or validation (1) subjects, cases or label maps; None where the
    split is not by subject (CT: by region) or the task is synthetic."""
    from .data import prostate, synthhead
    ids = {"mindboggle": (mindboggle.TRAIN_SUBJECTS, mindboggle.VALIDATION_SUBJECTS),
           "prostate": (prostate.TRAIN_CASES, prostate.VALIDATION_CASES),
           "synthhead": (synthhead.TRAIN_MAPS, synthhead.VALIDATION_MAPS)}.get(task)
    return None if ids is None else list(ids[which])


def _digest(state: Dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and tensor bytes."""
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def _affine_only(cfg, ck: dict) -> Optional[dict]:
    """The run's validation figures of the affine stage alone. Runs on the prostate or CT task made before
    the trainer used the task's metric stored a label-map Dice of bit-packed labels: recomputed here."""
    from .data.tasks import TASKS as TASK_INFO, run_task_config
    stored = ck["extra"].get("affine_only_validation")
    task = cfg.continual.tasks[0] if cfg.continual.tasks else cfg.data.task  # the trainer's validation task
    info = TASK_INFO.get(task)
    if info is None or info.metric not in ("prostate", "ct") or (stored or {}).get("accuracy"):
        return stored
    from .data.registry import load_split
    from .evaluate import affine_only_validation
    return affine_only_validation(task, load_split(run_task_config(cfg, task), "val"))


def _keep_measured(old: dict, new: dict, same_weights: bool) -> dict:
    """``new``'s per-task settings with what ``old`` measured and chose for the same weights (accuracy,
    speed, refinement), so that re-exporting them loses nothing; new weights start with none of it."""
    if not same_weights:
        return new
    out = {}
    for t, settings in new.items():
        kept = (old.get(TASK_SETTINGS_KEY) or {}).get(t) or {}
        out[t] = {**settings, **{k: v for k, v in kept.items() if k in ("accuracy", "speed", REFINEMENT_KEY)}}
    return out


def export(checkpoint: Path, name: str, out: Path, export_command: str, task: Optional[str] = None,
           all_tasks: bool = False, settings_from: Optional[str] = None) -> Path:
    ck = load_checkpoint(checkpoint)
    cfg = from_dict(ck["config"])
    if cfg.model.architecture not in ARCHITECTURES:
        raise ValueError(f"{cfg.model.architecture!r} is a training-only network; only {ARCHITECTURES} can be bundled")
    net = build_model(cfg.model)
    net.load_state_dict(ck["modules"]["model"])
    task_card = _task_card(cfg, ck, task, all_tasks)
    task = TASKS.get(cfg.data.task) or {"data": task_card["trained_on"], "licence": task_card["licence"],
                                        "expects": task_card["input"].get("expects", "")}
    task = _with_precision_data(cfg, task)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    weights_path = folder / "weights.pt"
    before = _digest(torch.load(weights_path, map_location="cpu", weights_only=True)) if weights_path.exists() else None
    weights = {k: v.half() for k, v in net.state_dict().items()}
    same_weights = before == _digest(weights)
    torch.save(weights, weights_path)
    card_path = folder / "card.json"
    old = json.loads(card_path.read_text()) if card_path.exists() else {}
    if before is not None and not same_weights:
        # new weights: the old card's measured accuracy and speed described other weights
        old = {k: v for k, v in old.items() if k not in ("accuracy", "speed")}
        print(f"[export] {name}: new weights; its accuracy and speed are cleared until measured again "
              f"(python benchmarks/bench_register.py --model {name} --update-card ...)")
    select = getattr(cfg.loop, "select", "dice")
    best = next((h for h in ck["history"] if h.get(select) == ck["best_score"]), None)
    teacher = _teacher_summary(cfg.strategy.teacher, cfg.strategy.teacher_refine) if cfg.strategy.teacher else None
    card = {
        "name": name,
        "kind": KINDS.get(cfg.model.architecture, "light-weight"),
        "description": cfg.description,
        "weights": "weights.pt",
        "weights_dtype": "float16 (cast to float32 on load)",
        "architecture": {"name": cfg.model.architecture, "cascades": cfg.model.cascades,
                         "kwargs": dict(cfg.model.kwargs), "parameters": count_parameters(net),
                         "parameters_per_cascade": count_parameters(net.subnets[0])},
        "input": {"spacing": cfg.data.spacing, "size": list(cfg.data.size),
                  "normalisation": normalisation(cfg.data).to_dict(),
                  "grid": "LPS-aligned box (identity direction) of size (x, y, z) voxels at `spacing` mm, "
                          "centred on the fixed image's foreground bounding box",
                  "channels": ["fixed (normalised)", "moving after the affine stage (normalised)"],
                  "expects": task["expects"]},
        "output": "voxel flow on the input grid, fixed -> moving; composed of all cascades",
        "teacher": None if teacher is None else _teacher_name(teacher),
        "affine_stage": {"method": "SimpleITK moments init + affine, correlation metric (DeepRegLib.affine)",
                         **affine_config(cfg.data).to_dict()},
        "training": {
            "experiment": cfg.name, "data": task["data"],
            "train_subjects": cfg.data.train_subjects or _split_ids(cfg.data.task, 0),
            "validation_subjects": cfg.data.validation_subjects or _split_ids(cfg.data.task, 1),
            "licence": task["licence"],
            "strategy": cfg.strategy.name,
            "method": METHODS.get(cfg.strategy.name, cfg.strategy.name),
            "curriculum": describe_curriculum(cfg.curriculum),
            "teacher": teacher,
            "steps": ck["step"], "train_minutes": round(ck["train_seconds"] / 60.0, 1),
            "selection": (f"the final weights (step {ck['step']}); validation every {cfg.loop.val_every} steps"
                          if cfg.continual.tasks else
                          f"best mean label Dice on the validation pairs (network grid), every {cfg.loop.val_every} steps"
                          if select == "dice" else
                          f"best '{select}' on validation (network grid: label Dice of the validation pairs minus "
                          f"0.05 x the mean error in mm on known-answer pairs of the validation brains), every "
                          f"{cfg.loop.val_every} steps"),
            "best_validation_grid": best,
            "affine_only_validation_grid": _affine_only(cfg, ck),
            "initialised_from": ck["extra"].get("init"),
            "lineage": lineage(cfg.model.init),
            "config": ck["config"],
            "commands": ck["commands"],
            "export": export_command,
        },
        "licence": task["licence"],
        "accuracy": old.get("accuracy", {}),
        "speed": old.get("speed", {}),
    }
    if hasattr(net, "factor"):  # low-resolution: the grid the network itself runs on
        card["input"]["network_grid"] = {
            "spacing": cfg.data.spacing * net.factor, "size": [-(-n // net.factor) for n in cfg.data.size],
            "resampling": (f"input grid rearranged into {net.factor}x{net.factor}x{net.factor} sub-voxel channels "
                           "(space to depth)" if getattr(net, "unshuffle", False) else
                           f"input grid average-pooled {net.factor}x{net.factor}x{net.factor}")
                          + f"; the flow is upsampled back (cell-centred trilinear) and multiplied by {net.factor}"}
    if task_card is not None:  # a bundle defines its task (DeepRegLib.bundles.taskspec)
        card.update({k: v for k, v in task_card.items() if k not in ("input", "affine_stage")})
        card["input"].update(task_card["input"])
        card["affine_stage"] = task_card["affine_stage"]
        if TASK_SETTINGS_KEY in card:
            card[TASK_SETTINGS_KEY] = _keep_measured(old, card[TASK_SETTINGS_KEY], same_weights)
    card["licence"] = card["training"]["licence"] = with_inherited_licence(str(card["licence"]), cfg.model.init)
    if card.get(REFINEMENT_KEY) is None and old.get(REFINEMENT_KEY) is not None and same_weights:
        card[REFINEMENT_KEY] = old[REFINEMENT_KEY]  # same weights: the chosen refinement still holds
    if settings_from:  # a successor network: the inference settings of the bundle it replaces, not re-tuned
        other = load_bundle(settings_from).card
        card["affine_stage"] = other["affine_stage"]
        if other.get(REFINEMENT_KEY):
            card[REFINEMENT_KEY] = {**other[REFINEMENT_KEY], "carried_from": other["name"],
                                    "carried_note": f"the affine stage and default refinement of {other['name']} as "
                                                    "they are; its 'validation' figures below describe that network"}
        card["settings_from"] = other["name"]
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return folder


def main(argv=None) -> None:
    import argparse
    p = argparse.ArgumentParser(prog="python -m training export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder (uses best.pt) or checkpoint file")
    p.add_argument("--name", required=True)
    p.add_argument("--out", type=Path, default=REPO / "Resources" / "models")
    p.add_argument("--task", default=None, help="continual runs: the task whose grid/normalisation/affine the card "
                                               "defines (default: the first task)")
    p.add_argument("--all-tasks", action="store_true", help="continual runs: one bundle for every task trained "
                   "(a universal model): --task is its default, the others are chosen as NAME:TASK")
    p.add_argument("--settings-from", default=None, help="a bundle whose affine stage and default refinement the "
                   "new card takes as they are (a successor network)")
    a = p.parse_args(argv)
    ck = a.run / "best.pt" if a.run.is_dir() else a.run
    if a.run.is_dir() and json.loads((a.run / "config.json").read_text()).get("continual", {}).get("tasks"):
        ck = a.run / "last.pt"  # continual runs: the final weights, which the accuracy matrix's last row describes
    print(export(ck, a.name, a.out, "python -m training export " + " ".join(argv if argv is not None else sys.argv[1:]),
                 a.task, a.all_tasks, a.settings_from))
