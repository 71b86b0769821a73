"""Trainer callbacks: validation, checkpoints, CSV logs, plots, time limit, a graceful stop on a signal.

Each callback may implement ``on_train_start(trainer)``, ``on_step_start(trainer)``,
``on_step_end(trainer, logs)`` and ``on_train_end(trainer)``; ``state_dict``/
``load_state_dict`` when it has state worth keeping in checkpoints.
"""
from __future__ import annotations

import csv
import json
import signal
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np


class Callback:
    def on_train_start(self, trainer) -> None: ...
    def on_step_start(self, trainer) -> None: ...
    def on_step_end(self, trainer, logs: Dict[str, float]) -> None: ...
    def on_train_end(self, trainer) -> None: ...


def append_csv(path: Path, row: Dict[str, float]) -> None:
    """Append ``row`` to a CSV file, widening the header when new columns appear."""
    rows: List[Dict[str, str]] = []
    fields: List[str] = []
    if path.exists():
        with path.open() as fh:
            reader = csv.DictReader(fh)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
    new = [k for k in row if k not in fields]
    if new or not path.exists():
        fields += new
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
            w.writerow(row)
    else:
        with path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=fields).writerow(row)


def drop_rows_after(path: Path, step: int) -> None:
    """Remove rows logged after ``step`` (a resumed run re-does the steps after its checkpoint)."""
    if not path.exists():
        return
    with path.open() as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if float(r.get("step") or 0) <= step]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


class CSVLogger(Callback):
    """Mean of every logged term over ``every`` steps -> ``<run>/log.csv``."""

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self.buffer: List[Dict[str, float]] = []
        self.t0 = time.perf_counter()

    def on_train_start(self, trainer) -> None:
        if trainer.dist.main:
            drop_rows_after(trainer.run_dir / "log.csv", trainer.step)
            drop_rows_after(trainer.run_dir / "val.csv", trainer.step)

    def on_step_end(self, trainer, logs: Dict[str, float]) -> None:
        self.buffer.append(logs)
        if trainer.step % self.every == 0:
            keys = sorted({k for r in self.buffer for k in r})
            row = {"step": trainer.step, **{k: float(np.mean([r[k] for r in self.buffer if k in r])) for k in keys},
                   "sec_per_step": (time.perf_counter() - self.t0) / len(self.buffer),
                   "lr": trainer.strategy.optimisers["model"].param_groups[0]["lr"]}
            if trainer.dist.main:
                append_csv(trainer.run_dir / "log.csv", row)
            self.buffer, self.t0 = [], time.perf_counter()


class Validate(Callback):
    """Every ``every`` steps (and at the end): grid validation, history, best checkpoint, last checkpoint, plots."""

    def __init__(self, every: int, metric: str = "dice") -> None:
        self.every = max(1, every)
        self.metric = metric
        self.last_step = -1

    def on_train_start(self, trainer) -> None:
        # a run starts fresh (step 0) or from last.pt, which was written by a validation at this step
        self.last_step = trainer.step if trainer.step > 0 else -1

    def run(self, trainer) -> None:
        from .distributed import barrier
        self.last_step = trainer.step
        trainer.sync_rng_states()
        if trainer.dist.main:
            self._run(trainer)
        barrier(trainer.dist)

    def _run(self, trainer) -> None:
        v = trainer.validate()
        rec = {"step": trainer.step, **v, "train_minutes": trainer.train_seconds / 60.0}
        trainer.history.append(rec)
        append_csv(trainer.run_dir / "val.csv", rec)
        print("[val] " + json.dumps({k: round(x, 5) if isinstance(x, float) else x for k, x in rec.items()}), flush=True)
        score = v.get(self.metric, -v.get("folding_percent", 0.0))
        if score > trainer.best_score:
            trainer.best_score = score
            trainer.save("best.pt")
        trainer.save("last.pt")
        from .plots import plot_run
        plot_run(trainer.run_dir)

    def on_step_end(self, trainer, logs: Dict[str, float]) -> None:
        if trainer.step % self.every == 0:
            self.run(trainer)

    def on_train_end(self, trainer) -> None:
        if self.last_step != trainer.step:  # the same decision on every rank
            self.run(trainer)


class TimeLimit(Callback):
    """Stop this invocation after ``minutes`` of wall time (the next one resumes)."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0
        self.t0 = time.perf_counter()

    def on_train_start(self, trainer) -> None:
        self.t0 = time.perf_counter()

    def on_step_end(self, trainer, logs: Dict[str, float]) -> None:
        if self.seconds > 0 and time.perf_counter() - self.t0 > self.seconds:
            print(f"[train] time limit reached at step {trainer.step}; run the same command to resume", flush=True)
            trainer.stop = True


class StopOnSignal(Callback):
    """Ctrl-C (SIGINT) or SIGTERM stops training after the step in progress, and the run ends as at its time
    limit: a last validation writes ``last.pt`` (and ``best.pt`` if better), so the same command resumes
    there and nothing since the last validation is lost. A second signal stops at once (the handler that was
    there before). Only the main thread can take signals; elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.previous: Dict[int, object] = {}

    def on_train_start(self, trainer) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum, frame) -> None:
            print(f"[train] {signal.Signals(signum).name}: stopping after this step and saving last.pt "
                  "(send it again to stop at once)", flush=True)
            trainer.stop = True
            self.on_train_end(trainer)  # the next signal gets the previous handler

        self.previous = {s: signal.signal(s, stop) for s in self.SIGNALS}

    def on_train_end(self, trainer) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}
