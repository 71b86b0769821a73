"""Model bundles: weights + a JSON model card, found on disk with no network access.

A bundle is a folder ``<models dir>/<name>/`` holding ``card.json`` and the weights
file it names.  Folders searched, in order: each entry of ``$DEEPREG_MODELS_PATH``
(``os.pathsep``-separated), then ``Resources/models`` beside the ``DeepRegLib`` package.
Listing and reading cards needs no torch (the Slicer panel lists models before torch is
installed); torch is imported only to build a network.

A model made for several tasks (``universal``) has one network and, per task, its own grid,
normalisation, affine stage, refinement and measured accuracy: the card's top level describes its
default task (``card["task"]``), ``card["task_settings"][<task>]`` each other one. A model is named
``NAME`` (its default task) or ``NAME:TASK`` (e.g. ``universal:prostate``) wherever a model name is
taken: :func:`load_bundle`, ``register(model=...)``, the CLI's ``--model`` and the Slicer panel.
"""
from __future__ import annotations

import copy
import json
import os
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ..errors import DeepRegError, InputError, ModelNotFoundError, ModelWarning
from ..pipeline import InputSpec
from .taskspec import FIELD_KEY

if TYPE_CHECKING:
    from ..models import LowResolution, RecursiveCascade
    from ..refine import RefineConfig

from .. import DEFAULT_MODEL  # noqa: F401  (re-exported)
from ..project import RESOURCES_DIR
CARD_FILE = "card.json"
#: the card's block naming the refinement ``register()`` runs by default (read by ``DeepRegLib.refine``)
REFINEMENT_KEY = "refinement"
#: kind of distilled network per architecture (a card's own ``kind`` wins)
KINDS = {"ldr": "light-weight", "lowres_ldr": "low-resolution"}
#: a multi-task card's block of per-task settings, and the keys each task has its own of
TASK_SETTINGS_KEY = "task_settings"
TASK_KEYS = ("task", "input", "affine_stage", FIELD_KEY, REFINEMENT_KEY, "accuracy", "speed")
_TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def split_reference(ref: str) -> Tuple[str, Optional[str]]:
    """``'universal:prostate'`` -> ``('universal', 'prostate')``; a plain name or a folder -> ``(ref, None)``."""
    if Path(ref).is_dir():
        return ref, None
    head, sep, tail = ref.rpartition(":")
    if sep and head and _TASK_NAME.fullmatch(tail):
        return head, tail
    return ref, None


def model_dirs() -> List[Path]:
    dirs = [Path(p) for p in os.environ.get("DEEPREG_MODELS_PATH", "").split(os.pathsep) if p]
    dirs.append(RESOURCES_DIR / "models")
    return dirs


@dataclass
class ModelBundle:
    """A loaded model card; :meth:`network` builds the torch module with its weights."""

    name: str
    path: Path
    card: dict

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.card["input"])

    @property
    def task(self):
        """The :class:`DeepRegLib.bundles.taskspec.TaskSpec` the card defines (grid, normalisation, affine, modalities)."""
        from .taskspec import TaskSpec
        return TaskSpec.from_card(self.card)

    @property
    def default_task(self) -> str:
        return str(self.card.get("task", "brain"))

    @property
    def tasks(self) -> List[str]:
        """The tasks this network serves: its default task, then the others (``task_settings``) in the
        order of the card's ``tasks``."""
        servable = [t for t in self.card.get(TASK_SETTINGS_KEY) or {} if t != self.default_task]
        order = [t for t in self.card.get("tasks") or [] if t in servable]
        return [self.default_task] + order + [t for t in servable if t not in order]

    def for_task(self, task: Optional[str]) -> "ModelBundle":
        """This model as set up for ``task`` (None: its default task): a bundle whose card has that
        task's grid, normalisation, affine stage, refinement and accuracy, named ``NAME:TASK``."""
        if task is None or task == self.default_task:
            return self
        settings = (self.card.get(TASK_SETTINGS_KEY) or {}).get(task)
        if settings is None:
            raise ModelNotFoundError(f"model {self.name!r} is not made for task {task!r}; its tasks: "
                                     + ", ".join(self.tasks))
        card = {k: v for k, v in self.card.items() if k not in TASK_KEYS}
        card[TASK_SETTINGS_KEY] = {t: v for t, v in card[TASK_SETTINGS_KEY].items() if t != task}
        card[TASK_SETTINGS_KEY][self.default_task] = {k: self.card[k] for k in TASK_KEYS[1:] if k in self.card}
        card.update(copy.deepcopy(settings))
        card["task"] = task
        return ModelBundle(f"{split_reference(self.name)[0]}:{task}", self.path, card)

    @property
    def architecture(self) -> str:
        return self.card["architecture"]["name"]

    @property
    def cascades(self) -> int:
        return int(self.card["architecture"]["cascades"])

    @property
    def kind(self) -> str:
        """``'light-weight'`` or ``'low-resolution'`` (the card's ``kind``, else from the architecture)."""
        return self.card.get("kind") or KINDS.get(self.architecture, "unknown")

    @property
    def network_grid(self) -> Tuple[float, Tuple[int, int, int]]:
        """``(spacing mm, size (x, y, z))`` the network itself runs on: the input grid, or for a
        low-resolution model the input grid average-pooled by its ``factor``."""
        spec = self.input_spec
        factor = int(self.card["architecture"].get("kwargs", {}).get("factor", 1)) if self.kind == "low-resolution" else 1
        return spec.spacing * factor, tuple(-(-s // factor) for s in spec.size)

    @property
    def parameters(self) -> Optional[int]:
        p = self.card["architecture"].get("parameters")
        return None if p is None else int(p)

    def details(self) -> List[str]:
        """Kind, grids, parameters and measured speed (from the card), one short line each."""
        spec = self.input_spec
        size = "x".join(str(s) for s in spec.size)
        lines = [f"kind: {self.kind}"]
        if len(self.tasks) > 1:
            base = split_reference(self.name)[0]
            lines.append(f"task: {self.default_task}, one of the tasks {', '.join(self.tasks)} of one network "
                         f"(choose with the model {base}:TASK)")
        net_spacing, net_size = self.network_grid
        grid = f"input grid: {size} voxels at {spec.spacing:g} mm"
        if (net_spacing, net_size) != (spec.spacing, tuple(spec.size)):
            grid += f"; network runs at {net_spacing:g} mm on {'x'.join(str(s) for s in net_size)}"
        lines.append(grid)
        params = self.parameters
        lines.append(f"parameters: {params:,}" if params is not None else "parameters: not recorded")
        speed = self.card.get("speed", {})
        if speed.get("network_s_median") is not None or speed.get("register_s_median") is not None:
            parts = []
            if speed.get("network_s_median") is not None:
                parts.append(f"network {speed['network_s_median']:.3f} s")
            if speed.get("register_s_median") is not None:
                parts.append(f"register() {speed['register_s_median']:.3f} s")
            thr = speed.get("threads")
            lines.append("speed: " + ", ".join(parts) + (f" (median, {thr} CPU threads)" if thr else " (median)"))
        else:
            lines.append("speed: not measured")
        call = speed.get("default_call")  # benchmarks/bench_default.py --update-card
        if call:
            base = call.get("baseline") or {}
            lines.append(f"default call: register() {call['register_s_median']:.2f} s, CLI {call['cli_wall_s_median']:.1f} s "
                         f"(median, {call.get('threads')} CPU threads; {base.get('model')} "
                         f"{base.get('register_s_median', float('nan')):.2f} s in the same run)")
        lines.append(self.refinement_line())
        precision = self.precision_line()
        if precision:
            lines.append(precision)
        return lines

    def precision_line(self) -> str:
        """The card's known-answer precision (``precision``, written by ``benchmarks/bench_precision.py``):
        median mean error (mm) of the default call per kind of pair, beside ANTs SyN's, then ``--refine``'s where
        measured; '' when not measured."""
        block = self.card.get("precision") or {}
        kinds = block.get("default_mean_error_mm") or {}
        if not kinds:
            return ""
        syn = block.get("ants_syn_mean_error_mm") or {}
        parts = [f"{k} {v:.2f}" + (f" (SyN {syn[k]:.2f})" if k in syn else "") for k, v in kinds.items()]
        refine = block.get("refine_mean_error_mm") or {}
        also = ("; --refine " + ", ".join(f"{k} {v:.2f}" for k, v in refine.items())) if refine else ""
        return "precision (known-answer pairs, mean error mm): " + ", ".join(parts) + also

    def refinement_line(self) -> str:
        """What ``register()`` runs after the network by default (the card's ``refinement`` block)."""
        default = (self.card.get(REFINEMENT_KEY) or {}).get("default")  # read here without torch (DeepRegLib.refine)
        if not default:
            return "default refinement: none (the network alone; --refine for the full one)"
        coarse = f"{default['coarse_steps']} at half resolution + " if default.get("coarse_steps") else ""
        similarity = {"mind": "MIND-SSC", "mi": "mutual information"}.get(
            default.get("similarity"), f"{default.get('ncc_window_mm')} mm LNCC windows")
        full = (self.card.get(REFINEMENT_KEY) or {}).get("full")
        full_text = "the full one" if not full else (
            f"{len(full.get('pyramid') or ()) + 1} levels, "
            f"{sum(n for _, n, _ in full.get('pyramid') or ()) + int(full.get('max_steps', 0))} steps"
            + (f" + {full['fine_steps']} at half the grid's spacing where the images are finer"
               if full.get("fine_steps") else ""))
        return (f"default refinement: {coarse}{default.get('max_steps')} steps, {similarity} "
                f"(--network-only: the network alone; --refine: {full_text})")

    @property
    def summary(self) -> str:
        acc = self.card.get("accuracy", {})
        dice = acc.get("dice_deformable", {})
        txt = f"{self.name}: {self.card.get('description', '')}"
        if dice:
            txt += f" (validation Dice subcortical {dice.get('subcortical', float('nan')):.3f}, " \
                   f"cortical {dice.get('cortical', float('nan')):.3f})"
        elif isinstance(acc.get("validation"), dict) and "default" in acc["validation"]:  # a task benchmark's medians
            parts = []
            for split in ("validation", "test"):
                d = (acc.get(split) or {}).get("default") or {}
                if "gland_dice" in d:
                    parts.append(f"{split} gland Dice {d['gland_dice']:.3f}, landmark TRE {d['landmark_tre_mm']:.2f} mm")
                elif "organ_dice" in d:
                    parts.append(f"{split} organ Dice {d['organ_dice']:.3f}, error {d['error_mm']:.2f} mm "
                                 "against the known displacement")
            if parts:
                txt += " (" + "; ".join(parts) + ")"
        return txt

    @property
    def weights_path(self) -> Path:
        """The card's weights file, which must lie inside the bundle folder (a card is data, not a licence
        to read any file: ``"weights": "../../x"`` is refused)."""
        return confined_weights(self.path, self.card, self.name)

    def check_weights_file(self) -> None:
        """A cheap check, without torch, that the weights file is a complete torch archive (every CRC
        right) whose pickle names no Python object outside torch (a payload that would run code):
        :class:`DeepRegError` otherwise. :meth:`load_state` remains the gate (``weights_only=True``)."""
        import zipfile
        weights = self.weights_path
        if not weights.is_file():
            raise DeepRegError(f"model {self.name}: weights file missing: {weights}")
        try:
            with zipfile.ZipFile(weights) as z:
                damaged = z.testzip()
                pickles = [n for n in z.namelist() if n.endswith("data.pkl")]
                data = z.read(pickles[0]) if len(pickles) == 1 and damaged is None else None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
            raise DeepRegError(f"model {self.name}: weights file {weights} is not a readable torch file "
                               f"(truncated or damaged?): {exc}") from None
        if damaged is not None or data is None:
            raise DeepRegError(f"model {self.name}: weights file {weights} is damaged"
                               + (f" (bad checksum of {damaged})" if damaged else " (not one torch state dict)"))
        try:
            unsafe = [f"{m}.{n}" for m, n in pickle_globals(data) if not _safe_global(m, n)]
        except Exception as exc:  # pickletools raises ValueError and others on a malformed stream
            raise DeepRegError(f"model {self.name}: weights file {weights} is damaged ({exc})") from None
        if unsafe:
            raise DeepRegError(f"model {self.name}: refusing to load {weights}: it names Python objects that are "
                               f"not tensors ({', '.join(sorted(set(unsafe))[:3])}): a pickle that could run code")

    def load_state(self) -> dict:
        """The weights as a state dict (``torch.load(weights_only=True)``: tensors only, never code).

        A missing, truncated or non-torch file, or one that holds anything but tensors (a pickled
        object: code would run if it were unpickled freely), raises :class:`DeepRegError` saying so."""
        import pickle
        import zipfile

        import torch
        weights = self.weights_path
        if not weights.is_file():
            raise DeepRegError(f"model {self.name}: weights file missing: {weights}")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "weights only" in str(exc).lower() or "weights_only" in str(exc):
                raise DeepRegError(f"model {self.name}: refusing to load {weights}: it holds Python objects, "
                                   "not only tensors (a pickle that could run code); use weights from a trusted "
                                   "source") from None
            raise DeepRegError(f"model {self.name}: weights file {weights} is damaged ({first})") from None
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError,
                ImportError, TypeError, IndexError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DeepRegError(f"model {self.name}: weights file {weights} is not a readable torch file "
                               f"(truncated or damaged?): {first[:200]}") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise DeepRegError(f"model {self.name}: weights file {weights} does not hold a state dict of tensors")
        return state

    def network(self, device: str = "cpu") -> "RecursiveCascade | LowResolution":
        from ..models import build_network
        state = self.load_state()
        net = build_network(self.architecture, self.cascades, **self.card["architecture"].get("kwargs", {}))
        try:
            net.load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as exc:
            raise DeepRegError(f"model {self.name}: the weights do not fit the card's architecture: "
                               f"{str(exc).strip().splitlines()[0][:200]}") from None
        return net.to(device).eval()


_SAFE_BUILTINS = {"set", "frozenset", "bytearray", "slice", "complex"}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _safe_global(module: str, name: str) -> bool:
    return (module == "torch" or module.startswith("torch.") or (module, name) == ("collections", "OrderedDict")
            or (module, name) == ("_codecs", "encode") or (module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS))


def pickle_globals(data: bytes) -> List[Tuple[str, str]]:
    """``(module, name)`` of every global a pickle stream imports (GLOBAL, INST, STACK_GLOBAL), read with
    :mod:`pickletools` (nothing is executed). A STACK_GLOBAL whose strings cannot be followed is
    reported as ``('?', '?')``."""
    import pickletools
    out, strings, memo, pushed = [], [], {}, None  # pushed: the string the previous opcode put on the stack
    for op, arg, _ in pickletools.genops(data):
        top, pushed = pushed, None
        if op.name in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            out.append((module, name))
        elif op.name in _STRING_OPS:
            pushed = arg if isinstance(arg, str) else str(arg)
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            memo[len(memo) if op.name == "MEMOIZE" else arg] = top
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed = memo.get(arg) or "?"
        elif op.name == "STACK_GLOBAL":
            out.append((strings[-2], strings[-1]) if len(strings) >= 2 else ("?", "?"))
        if pushed is not None:
            strings.append(pushed)
    return out


def confined_weights(folder: Path, card: dict, name: str = "model") -> Path:
    """``folder / card["weights"]``, resolved; :class:`DeepRegError` unless it lies inside ``folder``."""
    rel = card.get("weights") if isinstance(card, dict) else None
    if not isinstance(rel, str) or not rel:
        raise DeepRegError(f"model {name}: its card names no weights file")
    root = Path(folder).resolve()
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise DeepRegError(f"model {name}: its card's weights path {rel!r} points outside the bundle folder "
                           f"{root}; refusing it")
    return path


def check_card(folder: Path, card) -> None:
    """:class:`DeepRegError` unless ``card`` (read from ``folder``) has what a bundle needs."""
    where = Path(folder) / CARD_FILE
    if not isinstance(card, dict):
        raise DeepRegError(f"invalid model card {where}: not a JSON object")
    if not isinstance(card.get("input"), dict):
        raise DeepRegError(f"invalid model card {where}: no 'input' section")
    arch = card.get("architecture")
    if not isinstance(arch, dict) or "name" not in arch:
        raise DeepRegError(f"invalid model card {where}: no 'architecture' section")
    confined_weights(folder, card, Path(folder).name)


def update_card(bundle: ModelBundle, updates: dict) -> Path:
    """Write ``updates`` (card keys: ``accuracy``, ``speed``, ``refinement``, ...) into ``bundle``'s card
    file: at its top level for the bundle's default task, into ``task_settings[<task>]`` for a task view
    (``NAME:TASK``) of a multi-task bundle. Returns the card's path."""
    path = bundle.path / CARD_FILE
    card = json.loads(path.read_text())
    task = bundle.default_task
    target = card if task == str(card.get("task", "brain")) else card[TASK_SETTINGS_KEY][task]
    target.update(updates)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def _read_card(folder: Path, check: bool = True) -> Optional[dict]:
    """The card of a bundle folder (None without one); ``check``: also :func:`check_card` (listing skips a
    bundle that fails it; a folder named explicitly is read as is, and its weights path is still confined
    when the weights are loaded)."""
    card = folder / CARD_FILE
    if not card.is_file():
        return None
    try:
        data = json.loads(card.read_bytes().decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeepRegError(f"invalid model card {card}: {exc}") from None
    except OSError as exc:
        raise DeepRegError(f"unreadable model card {card}: {exc.strerror or exc}") from None
    if check:
        check_card(folder, data)
    return data


def _scan(problems: List[str]) -> Dict[str, ModelBundle]:
    found: Dict[str, ModelBundle] = {}
    for d in model_dirs():
        try:
            subs = sorted(d.iterdir()) if d.is_dir() else []
        except OSError as exc:
            problems.append(f"skipped the models folder {d}: {exc.strerror or exc}")
            continue
        for sub in subs:
            try:
                card = _read_card(sub) if sub.is_dir() else None
            except DeepRegError as exc:
                problems.append(f"skipped model {sub.name}: {exc}")
                continue
            if card is not None and sub.name not in found:
                found[sub.name] = ModelBundle(sub.name, sub, card)
    return found


def list_models(problems: Optional[List[str]] = None, task_views: bool = False) -> Dict[str, ModelBundle]:
    """Every bundle found (first folder wins on a name clash), by name; with ``task_views`` also each
    multi-task bundle's other tasks, as ``NAME:TASK`` (what the Slicer panel lists).

    A bad bundle (invalid JSON, not an object, no ``input`` or ``architecture`` section, a weights path
    outside its folder) is skipped, so that one broken folder in ``$DEEPREG_MODELS_PATH`` hides no
    other model: described in ``problems`` when a list is given, else in a
    :class:`~DeepRegLib.errors.ModelWarning`.
    """
    found_problems: List[str] = []
    found = _scan(found_problems)
    if problems is not None:
        problems.extend(found_problems)
    else:
        for p in found_problems:
            warnings.warn(p, ModelWarning, stacklevel=2)
    if task_views:
        for name, b in list(found.items()):
            for t in b.tasks[1:]:
                found.setdefault(f"{name}:{t}", b.for_task(t))
    return found


def with_task(model: Optional[str], task: Optional[str]) -> Optional[str]:
    """The model reference ``MODEL:TASK`` (``model`` None: the default model); ``model`` when ``task`` is None."""
    if task is None:
        return model
    name, named = split_reference(model or DEFAULT_MODEL)
    if named is not None and named != task:
        raise ModelNotFoundError(f"model {model} asked for task {task!r}: give the task once")
    return f"{name}:{task}"


def card_refinement(card: dict) -> Optional["RefineConfig"]:
    """The refinement a model card asks ``register()`` to run by default, or None (network only).

    The card's ``refinement`` block holds ``default`` (:class:`RefineConfig` fields) and how the setting
    was chosen and measured; ``benchmarks/tune_refine.py --update-card`` writes it.
    """
    return _card_refine_config(card, "default")


def card_full_refinement(card: dict) -> Optional["RefineConfig"]:
    """The full refinement (``register(refine=True)``, ``--refine``) a model card names in its ``refinement``
    block's ``full`` (:class:`RefineConfig` fields), or None: the engine's :class:`RefineConfig` with the
    card default's similarity."""
    return _card_refine_config(card, "full")


def _card_refine_config(card: dict, which: str) -> Optional["RefineConfig"]:
    from ..refine import RefineConfig  # torch: only when a refinement is built
    settings = (card.get(REFINEMENT_KEY) or {}).get(which)
    return None if not settings else RefineConfig.from_dict(settings)


def load_bundle(name: Optional[str] = None, task: Optional[str] = None) -> ModelBundle:
    """The bundle called ``name`` (default :data:`DEFAULT_MODEL`), or a bundle folder path, set up for
    ``task`` (None: the task ``NAME:TASK`` names, else the model's default task)."""
    if name is not None and not isinstance(name, (str, os.PathLike)):
        raise InputError(f"model must be a model name or a bundle folder (a string), not {type(name).__name__}")
    if task is not None and not isinstance(task, str):
        raise InputError(f"task must be a task name (a string), not {type(task).__name__}")
    name, task = split_reference(with_task(os.fspath(name) if name is not None else None, task) or DEFAULT_MODEL)
    p = Path(name)
    if p.is_dir():
        card = _read_card(p, check=False)
        if card is None:
            raise ModelNotFoundError(f"{p} has no {CARD_FILE}")
        return ModelBundle(p.name, p, card).for_task(task)
    problems: List[str] = []
    models = _scan(problems)
    if name not in models:
        broken = [q for q in problems if q.startswith(f"skipped model {name}:")]
        if broken:
            raise DeepRegError(f"model {name!r} cannot be used: {broken[0][len('skipped model '):]}")
        avail = ", ".join(sorted(models)) or "none (is Resources/models present?)"
        raise ModelNotFoundError(f"unknown model {name!r}; available models: {avail}")
    return models[name].for_task(task)
