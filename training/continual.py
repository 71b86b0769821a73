"""Continual / multi-task training on one trainer: task schedule, replay buffer, per-task metrics.

With ``cfg.continual.tasks`` set, the :class:`training.trainer.Trainer` hands batch
sampling and validation to :class:`Continual` (there is still one training loop):

* ``next_batch``: 'sequential' mode trains task ``t = step // steps_per_task``; 'joint'
  draws a task uniformly at each step. A batch carries ``task`` (its name), ``ref``
  (``(task index, pair index)``, what the replay buffer stores) and ``loss_weights``
  (the task's CompositeLoss weight overrides, e.g. Dice only for multimodal prostate).
* after every ``steps_per_task`` steps, :class:`TaskBoundary` evaluates every task and
  appends a row to the accuracy matrix ``R[i][j]`` = accuracy on task ``j`` after training
  task ``i`` (``<run>/continual.json``, also kept in the checkpoints).

Accuracy is the task's Dice (brain labels for brains, the gland for prostate, organs for
CT); prostate also reports landmark TRE (mm, centroid distance), CT the TRE against the
known displacement (mm, mean over the body): :func:`training.evaluate.evaluate_pairs`.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .augment import augment_fixed_warp, augment_moving, rerender_batch, same_anatomy_pairs
from .callbacks import Callback
from .data import PairSet, load_split, make_batch
from .data.registry import task_input
from .data.tasks import run_task_config, task_info
from .evaluate import evaluate_pairs


# ----------------------------------------------------------------------------- accuracy matrix
def accuracy_summary(matrix: Sequence[Sequence[float]]) -> Dict[str, float]:
    """Average accuracy and backward transfer of a ``T x T`` accuracy matrix ``R[i][j]``.

    ``ACC = mean_j R[T-1][j]``; ``BWT = mean_{j < T-1} (R[T-1][j] - R[j][j])`` (negative =
    forgetting). Rows may be fewer than ``T`` (a run in progress): the last row is used.
    """
    r = np.asarray(matrix, dtype=float)
    if r.ndim != 2 or r.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be 2-D with at least one row, got shape {r.shape}")
    last = r.shape[0] - 1
    acc = float(np.mean(r[last, :last + 1]))
    bwt = float(np.mean([r[last, j] - r[j, j] for j in range(last)])) if last > 0 else 0.0
    return {"average_accuracy": acc, "backward_transfer": bwt}


# ----------------------------------------------------------------------------- replay buffer
class ReplayBuffer:
    """Reservoir sampling over the stream of seen pairs (each a ``(task, pair)`` reference).

    After ``n`` additions every seen item is in the buffer with probability
    ``capacity / n`` (Vitter's algorithm R). The state is a plain dict (kept in the
    trainer's checkpoint) and randomness comes from the caller's generator.
    """

    def __init__(self, capacity: int, state: Optional[dict] = None) -> None:
        self.capacity = int(capacity)
        self.state = state if state is not None else {}
        self.state.setdefault("items", [])
        self.state.setdefault("seen", 0)

    @property
    def items(self) -> List[Tuple[int, int]]:
        return self.state["items"]

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Tuple[int, int], rng: np.random.Generator) -> None:
        if self.capacity <= 0:
            return
        self.state["seen"] += 1
        item = [int(x) for x in item]
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            j = int(rng.integers(self.state["seen"]))
            if j < self.capacity:
                self.items[j] = item

    def sample(self, rng: np.random.Generator, exclude_task: Optional[int] = None) -> Optional[Tuple[int, int]]:
        """A random stored item (of another task than ``exclude_task`` when there is one), or None."""
        pool = [it for it in self.items if exclude_task is None or it[0] != exclude_task] or self.items
        if not pool:
            return None
        return tuple(pool[int(rng.integers(len(pool)))])


# ----------------------------------------------------------------------------- the schedule
class Continual:
    """Every task's splits and the schedule that decides which task a step trains on."""

    def __init__(self, cfg, verbose: bool = True) -> None:
        cc = cfg.continual
        if cc.mode not in ("sequential", "joint"):
            raise ValueError(f"continual.mode must be 'sequential' or 'joint', not {cc.mode!r}")
        if cc.steps_per_task <= 0:
            raise ValueError("continual.steps_per_task must be positive")
        self.cfg = cfg
        self.tasks: List[str] = list(cc.tasks)
        self.infos = [task_info(t) for t in self.tasks]
        self.data_cfgs = [run_task_config(cfg, t) for t in self.tasks]
        self.train: List[PairSet] = []
        self.val: List[PairSet] = []
        for t, dc in zip(self.tasks, self.data_cfgs):
            if verbose:
                print(f"[continual] loading task {t} ({dc.size} at {dc.spacing} mm)", flush=True)
            self.train.append(load_split(dc, "train"))
            self.val.append(load_split(dc, "val"))

    def task_index(self, step: int, rng: Optional[np.random.Generator] = None) -> int:
        """Task trained at ``step`` (sequential), or a uniform draw from ``rng`` (joint)."""
        if self.cfg.continual.mode == "joint":
            return int(rng.integers(len(self.tasks)))
        return min(step // self.cfg.continual.steps_per_task, len(self.tasks) - 1)

    def batch(self, task: int, index: Sequence[int], device, rng: Optional[np.random.Generator] = None,
              step: Optional[int] = None) -> dict:
        data = self.train[task]
        flips = (rng.random(len(index)) < 0.5) if (rng is not None and self.data_cfgs[task].flip_lr) else None
        b = make_batch(data, list(index), device, flips)
        if rng is not None and self.data_cfgs[task].rerender:
            if self.tasks[task] != "synthhead":
                raise ValueError(f"data.rerender renders label maps: task 'synthhead' only, not {self.tasks[task]!r}")
            ramp = self.data_cfgs[task].contrast_curriculum_steps
            random_share = 1.0 if not ramp or step is None else min(1.0, step / ramp)
            b = same_anatomy_pairs(b, rng, self.data_cfgs[task].same_anatomy)
            b = rerender_batch(b, rng, task_input(self.data_cfgs[task])[0], random_share)
        if rng is not None:
            b = augment_moving(b, rng, self.data_cfgs[task].augment_affine)
            b = augment_fixed_warp(b, rng, self.data_cfgs[task].warp_fixed)
        b["task"] = self.tasks[task]
        b["ref"] = (task, int(index[0]))
        b["loss_weights"] = dict(self.infos[task].loss_weights)
        b["label_encoding"] = self.infos[task].label_encoding
        if self.infos[task].dice_sigmas:
            b["dice_sigmas"] = tuple(self.infos[task].dice_sigmas)
        return b

    def next_batch(self, trainer) -> dict:
        t = self.task_index(trainer.step, trainer.sampler)
        idx = trainer.sampler.integers(len(self.train[t]), size=self.cfg.loop.batch_size).tolist()
        return self.batch(t, idx, trainer.device, trainer.sampler, step=trainer.step)

    def validate(self, trainer) -> Dict[str, float]:
        """Every task's figures (``<task>/<figure>``); ``dice`` = mean accuracy over the tasks trained so far."""
        if getattr(self, "_last", (None, None))[0] == trainer.step:  # task boundary and Validate on one step
            return dict(self._last[1])
        out: Dict[str, float] = {}
        accs = []
        seen = len(self.tasks) if self.cfg.continual.mode == "joint" else \
            min(len(self.tasks), max(1, -(-trainer.step // self.cfg.continual.steps_per_task)))
        for j, (name, info) in enumerate(zip(self.tasks, self.infos)):
            v = evaluate_pairs(trainer.model, self.val[j], info.metric, trainer.device)
            out.update({f"{name}/{k}": x for k, x in v.items()})
            if j < seen:
                accs.append(v["accuracy"])
        out["dice"] = float(np.mean(accs))
        self._last = (trainer.step, dict(out))
        return out


class TaskBoundary(Callback):
    """At the end of each task (every ``steps_per_task`` steps): a row of the accuracy matrix."""

    def on_step_end(self, trainer, logs: Dict[str, float]) -> None:
        spt = trainer.cfg.continual.steps_per_task
        if trainer.step % spt == 0 and trainer.step // spt <= len(trainer.continual.tasks):
            self.record(trainer)

    def record(self, trainer) -> None:
        c = trainer.continual
        state = trainer.extra.setdefault("continual", {"tasks": c.tasks, "steps": [], "matrix": [], "details": []})
        if trainer.step in state["steps"]:
            return
        v = c.validate(trainer)
        row = [v[f"{t}/accuracy"] for t in c.tasks]
        state["steps"].append(trainer.step)
        state["matrix"].append(row)
        state["details"].append({k: x for k, x in v.items() if "/" in k})
        summary = accuracy_summary(state["matrix"])
        state.update(summary)
        cfg = trainer.cfg
        doc = {"experiment": cfg.name, "strategy": cfg.strategy.name, "mode": cfg.continual.mode,
               "buffer_size": cfg.continual.buffer_size, "steps_per_task": cfg.continual.steps_per_task,
               "tasks": c.tasks, "metrics": [i.metric for i in c.infos], **state, "commands": trainer.commands}
        (trainer.run_dir / "continual.json").write_text(json.dumps(doc, indent=1) + "\n")
        trainer.log(f"[continual] after {trainer.step} steps: " + ", ".join(f"{t} {a:.3f}" for t, a in zip(c.tasks, row))
                    + f"; ACC {summary['average_accuracy']:.3f}, BWT {summary['backward_transfer']:+.3f}")
