"""The one training loop: data, model, a pluggable strategy, callbacks, atomic resumable checkpoints.

Usage (what ``python -m training run EXPERIMENT`` does)::

    trainer = Trainer(cfg)          # resumes from <run_dir>/last.pt when it exists
    trainer.fit()

Everything random is seeded (Python, numpy, torch, the pair sampler, the loss's label
sampler) and every RNG state is stored in the checkpoints, so an interrupted run that
is resumed with the same command continues the same sequence of batches.
"""
from __future__ import annotations

import gc
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from DeepRegLib.models import LowResolution

from .checkpoints import load_checkpoint
from . import distributed as ddp
from .augment import augment_fixed_warp, augment_free_form, augment_moving
from .callbacks import CSVLogger, StopOnSignal, TimeLimit, Validate
from .config import ExperimentConfig, from_dict, to_dict
from .data import load_split, make_batch
from .data.tasks import task_info
from .evaluate import affine_only_validation, evaluate_grid
from .networks import build_model, load_trained
from .strategies import build_strategy

REPO = Path(__file__).resolve().parents[1]
#: loop fields that may change between invocations of one run (everything else must match)
RESUMABLE_CHANGES = {"steps", "minutes", "val_every", "log_every", "threads", "device"}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("loop.device=cuda but torch sees no CUDA device")
    return torch.device(name)


def atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def init_target(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> torch.nn.Module:
    """The module an initial ``state`` dict loads into: ``model`` itself, or, for a
    :class:`~DeepRegLib.models.LowResolution` model given a plain cascade's weights (keys without
    ``inner.``), its inner cascade (a low-resolution student warm-started from a 2 mm model)."""
    if isinstance(model, LowResolution) and not any(k.startswith("inner.") for k in state):
        return model.inner
    return model


def cascade_state(target: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
    """``(state, note)``: ``state`` restricted to the cascades ``target`` has, when the two differ only
    in their number of cascades (``subnets.<k>.*`` keys): a 1-cascade student starts from a 2-cascade
    model's first cascade, a 3-cascade one from its two cascades plus a fresh third (whose flow layer
    starts near zero, so the model starts at the 2-cascade model's accuracy). Any other mismatch is
    left for ``load_state_dict`` to report."""
    own = target.state_dict()
    if set(own) == set(state) or not hasattr(target, "subnets"):
        return state, ""

    def cascade(key: str) -> Optional[int]:
        parts = key.split(".")
        return int(parts[1]) if parts[0] == "subnets" and len(parts) > 2 and parts[1].isdigit() else None

    if any(cascade(k) is None for k in list(state) + list(own)):
        return state, ""
    n_own, n_given = len(target.subnets), 1 + max(cascade(k) for k in state)
    shared = {k: v for k, v in state.items() if cascade(k) < n_own}
    missing = [k for k in own if cascade(k) < n_given and k not in shared]
    unexpected = [k for k in shared if k not in own]
    if missing or unexpected:
        raise KeyError(f"the shared cascades differ: the initial weights lack {missing[:3]} and have "
                       f"unexpected {unexpected[:3]}")
    return shared, f"cascades 1-{min(n_own, n_given)} of {n_own} (the source has {n_given})"


def widen_inputs(target: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
    """``(state, note)``: first-convolution weights (``*.enc1.0.weight``) whose ``target`` takes ``k``
    times their input channels become ``W.repeat_interleave(k, 1) / k``: channel ``c`` of the source
    feeds the ``k`` channels ``c*k .. c*k + k - 1`` with a ``1/k`` share each. When those ``k``
    channels are sub-samples whose mean is the source's input (:func:`DeepRegLib.models.lowres.space_to_depth`
    vs ``downsample``), the widened network computes exactly what the source did."""
    own = target.state_dict()
    out, widened = dict(state), []
    for key, v in state.items():
        w = own.get(key)
        if (key.endswith("enc1.0.weight") and w is not None and w.dim() == v.dim() == 5 and w.shape[0] == v.shape[0]
                and w.shape[2:] == v.shape[2:] and w.shape[1] > v.shape[1] and w.shape[1] % v.shape[1] == 0):
            k = w.shape[1] // v.shape[1]
            out[key] = v.repeat_interleave(k, dim=1) / k
            widened.append(key)
    return out, (f"first convolutions widened {k}x ({len(widened)} cascades)" if widened else "")


class Trainer:
    def __init__(self, cfg: ExperimentConfig, command: Optional[str] = None, callbacks: Optional[list] = None,
                 verbose: bool = True) -> None:
        self.cfg = cfg
        torch.set_num_threads(max(1, cfg.loop.threads))
        self.run_dir = self.resolve(cfg.run_dir or f"training/runs/{cfg.name}")
        self.device = resolve_device(cfg.loop.device)
        self.dist = ddp.setup(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        ddp.barrier(self.dist)
        self.verbose = verbose and self.dist.main
        self.amp = bool(cfg.loop.amp and self.device.type == "cuda")
        seed_everything(cfg.loop.seed)
        # each rank samples its own shard of the training pairs with its own stream
        self.sampler = np.random.default_rng([cfg.loop.seed, self.dist.rank] if self.dist.enabled else cfg.loop.seed)
        self.loss_generator = torch.Generator().manual_seed(cfg.loop.seed + 1 + 1000 * self.dist.rank)
        self.continual = None
        if cfg.continual.tasks:  # several tasks: data and validation come from the task schedule
            if self.dist.enabled:
                raise ValueError("continual (multi-task) runs are not supported under torchrun yet")
            from .continual import Continual
            self.continual = Continual(cfg, verbose)
            self.train_data, self.val_data = self.continual.train[0], self.continual.val[0]
        else:
            self.train_data = load_split(cfg.data, "train")
            self.val_data = load_split(cfg.data, "val") if self.dist.main else None
        self.shard = np.arange(self.dist.rank, len(self.train_data), self.dist.world)
        # precision training (issue 24): more brains (IXI) and same-subject pairs with a known answer
        self.ixi_train = self.ixi_val = None
        if cfg.data.ixi_share > 0 and self.continual is None:
            from .data.registry import load_ixi
            self.ixi_train = load_ixi(cfg.data, "train")
            self.ixi_val = load_ixi(cfg.data, "val") if self.dist.main else None
            self.ixi_shard = np.arange(self.dist.rank, len(self.ixi_train), self.dist.world)
        self.known_val = None
        if cfg.data.same_subject > 0 and self.continual is None and self.dist.main:
            from .data.same_subject import validation_pairs
            self.known_val = validation_pairs([d for d in (self.val_data, self.ixi_val) if d is not None])
        self.model = build_model(cfg.model).to(self.device)
        self.input_transforms: List[Callable[[torch.Tensor], torch.Tensor]] = []
        self.step = 0
        self.best_score = -float("inf")
        self.history: List[Dict[str, float]] = []
        self.train_seconds = 0.0
        self.commands: List[str] = []
        self.stop = False
        self.extra: Dict[str, object] = {}
        last = self.run_dir / "last.pt"
        resumed = last.exists()
        if not resumed and cfg.model.init:
            self.load_init(cfg.model.init)
        self.strategy = build_strategy(cfg.strategy.name, self)
        self.net = self.model  # what training forwards through: the DDP wrapper when distributed
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            for name, m in self.strategy.modules.items():
                if name != "model":
                    ddp.broadcast_module(m)
        self._rng_states: Optional[list] = None
        from .curricula import curriculum_callbacks
        self.callbacks = [*curriculum_callbacks(cfg.curriculum), CSVLogger(cfg.loop.log_every),
                          Validate(cfg.loop.val_every, cfg.loop.select), TimeLimit(cfg.loop.minutes), StopOnSignal(),
                          *(callbacks or [])]
        if self.continual is not None:
            from .continual import TaskBoundary
            self.callbacks.insert(0, TaskBoundary())  # the task's row before a time limit can stop the run
        if resumed:
            self.load(last)
        elif self.dist.main:
            task = self.continual.tasks[0] if self.continual is not None else cfg.data.task
            self.extra["affine_only_validation"] = affine_only_validation(task, self.val_data)
        self.commands.append(command or " ".join(sys.argv))
        if self.dist.main:
            (self.run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def resolve(path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else REPO / p

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)

    def network_inputs(self, batch: Dict[str, torch.Tensor]):
        """``(fixed, moving)`` as the network sees them in training (after curriculum input transforms)."""
        f, m = batch["fixed"], batch["moving"]
        for t in self.input_transforms:
            f, m = t(f, batch), t(m, batch)
        return f, m

    def load_init(self, path: str) -> None:
        """Start from another run's model weights (training checkpoint) or a bundle's ``weights.pt``."""
        p = self.resolve(path)
        if p.is_dir():  # a run folder (best.pt) or a bundle folder, built as the network it holds
            state = load_trained(p).state_dict()
        else:
            obj = load_checkpoint(p)
            state = obj["modules"]["model"] if isinstance(obj, dict) and "modules" in obj else obj
        target = init_target(self.model, state)
        state, partial = cascade_state(target, state)
        state, widened = widen_inputs(target, state)
        target.load_state_dict({k: v.float() for k, v in state.items()}, strict=not partial)
        into = "inner cascade (low resolution)" if target is not self.model else "model"
        note = "; ".join(x for x in (partial, widened) if x)
        self.extra["init"] = {"from": path, "into": f"{into}: {note}" if note else into}
        self.log(f"[train] initialised model weights from {path}")

    def next_batch(self) -> Dict[str, torch.Tensor]:
        if self.continual is not None:
            return self.continual.next_batch(self)
        data, shard = self.train_data, self.shard
        if self.ixi_train is not None and self.sampler.random() < self.cfg.data.ixi_share:
            data, shard = self.ixi_train, self.ixi_shard
        idx = shard[self.sampler.integers(len(shard), size=self.cfg.loop.batch_size)]
        flips = (self.sampler.random(len(idx)) < 0.5) if self.cfg.data.flip_lr else None
        batch = make_batch(data, idx.tolist(), self.device, flips)
        if self.cfg.data.same_subject > 0 and self.sampler.random() < self.cfg.data.same_subject:
            from .data.same_subject import SameSubjectConfig, same_subject_batch
            from .data.tasks import normalisation_of
            params = SameSubjectConfig(**{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in self.cfg.data.same_subject_params.items()})
            batch = same_subject_batch(batch, self.sampler, params, normalisation_of(self.cfg.data))
        else:
            batch = augment_moving(batch, self.sampler, self.cfg.data.augment_affine)
            batch = augment_free_form(batch, self.sampler, self.cfg.data.free_form)
            batch = augment_fixed_warp(batch, self.sampler, self.cfg.data.warp_fixed)
        batch["label_encoding"] = task_info(self.cfg.data.task).label_encoding
        return batch

    def validate(self) -> Dict[str, float]:
        if self.continual is not None:
            return self.continual.validate(self)
        out = evaluate_grid(self.model, self.val_data, self.device)
        if self.known_val is not None:
            from .evaluate import evaluate_known
            out.update(evaluate_known(self.model, self.known_val, self.device))
            out["dice_precise"] = out.get("dice", 0.0) - 0.05 * out["known_error_mm"]
        return out

    # ------------------------------------------------------------------ checkpoints
    def _local_rng(self) -> dict:
        return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "sampler": self.sampler.bit_generator.state, "loss": self.loss_generator.get_state()}

    def sync_rng_states(self) -> None:
        """Collect every rank's RNG states (collective: call on all ranks before rank 0 saves)."""
        self._rng_states = ddp.gather(self._local_rng(), self.dist)

    def state_dict(self) -> dict:
        rng = self._rng_states if self._rng_states is not None else [self._local_rng()]
        return {
            "config": to_dict(self.cfg),
            "modules": {k: m.state_dict() for k, m in self.strategy.modules.items()},
            "optimisers": {k: o.state_dict() for k, o in self.strategy.optimisers.items()},
            # one AMP gradient scaler per optimiser; "scaler" (the model's) is what earlier checkpoints held
            "scaler": self.strategy.scaler.state_dict(),
            "scalers": {k: sc.state_dict() for k, sc in self.strategy.scalers.items()},
            "step": self.step, "best_score": self.best_score, "history": self.history,
            "train_seconds": self.train_seconds, "commands": self.commands, "extra": self.extra,
            "rng": rng[0], "rng_per_rank": rng,
            "callbacks": [getattr(c, "state_dict", lambda: None)() for c in self.callbacks],
        }

    def save(self, name: str) -> Path:
        """Write a checkpoint atomically (rank 0 only; others return the path)."""
        path = self.run_dir / name
        if self.dist.main:
            atomic_save(self.state_dict(), path)
        return path

    def load(self, path: Path) -> None:
        ck = load_checkpoint(path)
        saved = from_dict(ck["config"])
        diff = _config_differences(to_dict(saved), to_dict(self.cfg))
        if diff:
            raise ValueError(f"{path} was trained with a different config ({'; '.join(diff)}); "
                             "use a new run_dir (--run-dir) or the original settings")
        for k, m in self.strategy.modules.items():
            m.load_state_dict(ck["modules"][k])
        for k, o in self.strategy.optimisers.items():
            o.load_state_dict(ck["optimisers"][k])
        scalers = ck.get("scalers") or {}  # earlier checkpoints: one scaler shared by every optimiser
        for k, sc in self.strategy.scalers.items():
            sc.load_state_dict(scalers.get(k, ck["scaler"]))
        self.step, self.best_score, self.history = ck["step"], ck["best_score"], ck["history"]
        self.train_seconds, self.commands, self.extra = ck["train_seconds"], ck["commands"], ck["extra"]
        per_rank = ck.get("rng_per_rank") or [ck["rng"]]
        r = per_rank[self.dist.rank] if len(per_rank) == self.dist.world else per_rank[0]
        random.setstate(r["python"])
        np.random.set_state(r["numpy"])
        torch.set_rng_state(r["torch"])
        if r["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(r["cuda"])
        self.sampler.bit_generator.state = r["sampler"]
        self.loss_generator.set_state(r["loss"])
        for c, s in zip(self.callbacks, ck.get("callbacks", [])):
            if s is not None and hasattr(c, "load_state_dict"):
                c.load_state_dict(s)
        self.log(f"[train] resumed {self.run_dir.name} at step {self.step} (best {self.best_score:.4f})")

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        """Train to ``loop.steps`` (or the time limit); returns the run folder."""
        for c in self.callbacks:
            c.on_train_start(self)
        self.model.train()
        self.stop = False
        while self.step < self.cfg.loop.steps and not self.stop:
            t0 = time.perf_counter()
            for c in self.callbacks:
                c.on_step_start(self)
            logs = self.strategy.train_step(self.next_batch())
            self.step += 1
            self.train_seconds += time.perf_counter() - t0
            for c in self.callbacks:
                c.on_step_end(self, logs)
            self.stop = ddp.any_true(self.stop, self.dist)
        for c in self.callbacks:
            c.on_train_end(self)
        if self.dist.enabled:
            sums = ddp.gather({k: ddp.checksum(m) for k, m in self.strategy.modules.items()}, self.dist)
            if self.dist.main:
                (self.run_dir / "ddp_check.json").write_text(json.dumps(
                    {"world_size": self.dist.world, "step": self.step, "checksums_per_rank": sums}, indent=1))
            # the DDP wrapper holds the process group; dropped here (the trainer and its strategy form a cycle that
            # might otherwise be collected only at interpreter exit, where destroying gloo's threads can abort)
            self.net = self.model
            gc.collect()
            ddp.teardown(self.dist)
        return self.run_dir


def _config_differences(a: dict, b: dict, prefix: str = "") -> List[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        if (prefix == "loop." and k in RESUMABLE_CHANGES) or (not prefix and k == "description"):
            continue  # loop budgets may change between invocations; a description is prose, not a setting
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict) and k not in ("kwargs", "affine"):
            out += _config_differences(a[k], b[k], key + ".")
        elif a.get(k) != b.get(k):
            out.append(f"{key}: {a.get(k)!r} -> {b.get(k)!r}")
    return out
