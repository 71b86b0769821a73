"""What one Dask worker does for one pair of :mod:`DeepRegLib.batch.runner`: register, write, measure.

Runs inside a worker process.  Outputs of a pair live in ``<output_dir>/pairs/<id>/``:
``transform.h5`` (fixed -> moving, ITK/LPS), optionally ``warped.nii.gz`` and
``warped_labels.nii.gz``, and ``result.json`` (the pair's record), each written under a
temporary name and renamed, so a file that exists is complete.  ``result.json`` is written
last: a pair is done when its record says ``ok`` and every output it lists exists.
torch is imported only here, on the workers (the client process never needs it).
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..errors import DeepRegError
from ..safeio import TMP_MARK as _TMP_MARK
from ..safeio import atomic_text, atomic_write

try:  # the plugin base class; batch needs the `batch` extra (dask[distributed])
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - without dask only the task function itself is usable
    WorkerPlugin = object  # type: ignore[misc,assignment]

RESULT = "result.json"
ATTEMPTS = ".attempts"
OUTPUT_NAMES = {"transform": "transform.h5", "warped": "warped.nii.gz", "warped_labels": "warped_labels.nii.gz"}


@dataclass(frozen=True)
class Pair:
    """One registration: ``moving`` onto ``fixed`` (paths). Labels are optional, on their image's grid."""

    id: str
    fixed: str
    moving: str
    moving_labels: Optional[str] = None
    fixed_labels: Optional[str] = None


@dataclass(frozen=True)
class TaskConfig:
    """What every pair of a batch shares (sent to the workers with each pair)."""

    output_dir: str
    model: str
    device: str = "cpu"
    refine: Any = False  # bool or a DeepRegLib.refine.RefineConfig
    write_warped: bool = False
    write_warped_labels: bool = False
    threads: int = 1
    folding_spacing_mm: float = 1.0  # as `deepreg evaluate --transform` (DeepRegLib.qa's default)


def pair_dir(output_dir: str | os.PathLike, pair_id: str) -> Path:
    return Path(output_dir) / "pairs" / pair_id


def file_stamp(path: Optional[str]) -> Optional[dict]:
    """A file's identity for resuming: its resolved absolute path, size and modification time (ns)."""
    if not path:
        return None
    real = os.path.realpath(os.path.expanduser(path))
    try:
        st = os.stat(real)
    except OSError:
        return {"path": real, "missing": True}
    return {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


_BUNDLES: Dict[tuple, object] = {}


def worker_bundle(model: str):
    """The process's :class:`~DeepRegLib.bundles.ModelBundle` for ``model``: finding a bundle reads every card,
    so it is loaded once per process (and models path) and shared by every pair."""
    key = (model, os.environ.get("DEEPREG_MODELS_PATH", ""))
    if key not in _BUNDLES:
        from ..bundles import load_bundle
        _BUNDLES[key] = load_bundle(model)
    return _BUNDLES[key]


def model_stamp(model: str) -> dict:
    """The model's identity for resuming: its name and the stamps of its card and weights files."""
    from ..bundles import CARD_FILE
    try:
        b = worker_bundle(model)
        files: tuple = (str(b.path / CARD_FILE), str(b.weights_path))
    except DeepRegError:
        files = ()
    return {"name": model, "files": [file_stamp(f) for f in files]}


def signature(pair: Pair, cfg: TaskConfig) -> dict:
    """What makes two runs of a pair the same work: every input file (resolved path, size, modification
    time), the model (its name, card and weights files), device, refinement and requested outputs.
    The same relative names in another folder, or an input replaced at the same path, are other work;
    the same files named differently are the same work."""
    return {"fixed": file_stamp(pair.fixed), "moving": file_stamp(pair.moving),
            "moving_labels": file_stamp(pair.moving_labels), "fixed_labels": file_stamp(pair.fixed_labels),
            "model": model_stamp(cfg.model), "device": cfg.device, "refine": refine_key(cfg.refine),
            "warped": bool(cfg.write_warped),
            "warped_labels": bool(cfg.write_warped_labels and pair.moving_labels),
            "folding_spacing_mm": cfg.folding_spacing_mm if (pair.moving_labels or pair.fixed_labels) else None}


def refine_key(refine: Any):
    """``refine`` as JSON: False, True or the fields of a ``RefineConfig``, exactly as it reads back from a
    stored record (tuples such as ``pyramid`` become lists), so a finished pair compares equal on resume."""
    return json.loads(json.dumps(asdict(refine))) if is_dataclass(refine) else bool(refine)


def completed_record(pair: Pair, cfg: TaskConfig) -> Optional[dict]:
    """The stored record of ``pair`` if a previous run finished it with these settings, else None."""
    d = pair_dir(cfg.output_dir, pair.id)
    try:
        rec = json.loads((d / RESULT).read_text())
    except (OSError, ValueError):
        return None
    if rec.get("status") != "ok" or rec.get("signature") != signature(pair, cfg):
        return None
    for key, size in rec.get("output_bytes", {}).items():
        p = d / OUTPUT_NAMES[key]
        if not p.is_file() or p.stat().st_size != size:
            return None
    return rec


def set_threads(n: int) -> None:
    """Threads of this process for torch (intra-op) and ITK filters. Results depend on this number."""
    import SimpleITK as sitk
    import torch
    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(n)


class ModelPreload(WorkerPlugin):
    """Dask worker plugin: set the worker's threads and load the model's network once, at worker start.

    Registered by :func:`DeepRegLib.batch.runner.run_batch`; a worker that replaces a dead one runs it
    again.  The network stays in :mod:`DeepRegLib.inference`'s per-process cache for every pair.
    """

    idempotent = True

    def __init__(self, model: str, device: str, threads: int) -> None:
        self.model, self.device, self.threads = model, device, threads

    def setup(self, worker=None) -> None:
        set_threads(self.threads)
        from .. import inference
        dev = inference.resolve_device(self.device)
        inference.load_network(worker_bundle(self.model), dev)  # the engine's per-process network cache


def _write_json(path: Path, obj: dict) -> None:
    atomic_text(path, json.dumps(obj, indent=1, allow_nan=True))


def _start_attempt(d: Path, run_id: str) -> int:
    """Remove temporaries of a killed attempt; log this attempt; its number within ``run_id`` (1-based)."""
    for p in d.iterdir():
        if _TMP_MARK in p.name:
            p.unlink(missing_ok=True)
    with open(d / ATTEMPTS, "a") as fh:
        fh.write(f"{run_id} {socket.gethostname()} {os.getpid()} {datetime.now(timezone.utc).isoformat()}\n")
    return started_attempts(d.parent.parent, d.name, run_id)


def started_attempts(output_dir: str | os.PathLike, pair_id: str, run_id: str) -> int:
    """How many times a worker started ``pair_id`` in run ``run_id`` (from its ``.attempts`` log)."""
    try:
        lines = (pair_dir(output_dir, pair_id) / ATTEMPTS).read_text().splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if line.split(" ", 1)[0] == run_id)


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory so far (MB): VmHWM on Linux, else ru_maxrss."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    try:
        import resource
        import sys
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(rss / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), 1)
    except (ImportError, OSError):
        return None


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, DeepRegError) else f"{type(exc).__name__}: {text}"


def _finite(x: float) -> Optional[float]:
    return round(float(x), 6) if x is not None and math.isfinite(x) else None


def process_pair(pair: Pair, cfg: TaskConfig, run_id: str) -> Dict[str, object]:
    """Register one pair on this worker and write its outputs; never raises for a bad pair.

    Returns the pair's record: ``status`` ``ok`` or ``failed`` (``message``), output paths relative
    to ``cfg.output_dir``, Dice (mean over all / subcortical < 1000 / cortical >= 1000 labels) when
    both label maps are given, % folding and SDlogJ of the transform (:func:`DeepRegLib.qa.transform_folding`
    on a ``folding_spacing_mm`` grid, inside the fixed label map, else the fixed image's non-zero
    voxels) when labels are given, and times in seconds.  A pair this run (``run_id``) already
    finished is not registered again: its stored record is returned.
    """
    t0 = time.perf_counter()
    done = completed_record(pair, cfg)
    if done is not None and done.get("run_id") == run_id:
        # finished in this run, but its result was lost with the worker that held it (Dask recomputes
        # a lost result): return the stored record instead of registering the pair again
        return done
    d = pair_dir(cfg.output_dir, pair.id)
    d.mkdir(parents=True, exist_ok=True)
    rec: Dict[str, object] = {"id": pair.id, "status": "failed", "message": "", **asdict(pair),
                              "signature": signature(pair, cfg), "run_id": run_id,
                              "attempt": _start_attempt(d, run_id),
                              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    try:
        rec.update(_register_and_write(pair, cfg, d))
        rec["status"] = "ok"
    except Exception as exc:  # a bad pair fails alone, with its message
        rec["message"] = _message(exc)
    rec["time_s"] = round(time.perf_counter() - t0, 4)
    rec["worker_peak_rss_mb"] = peak_rss_mb()
    rec["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _write_json(d / RESULT, rec)
    return rec


def _register_and_write(pair: Pair, cfg: TaskConfig, d: Path) -> dict:
    import SimpleITK as sitk

    from ..bundles.preflight import domain_warnings
    from ..imageio import as_image, check_same_grid, read_image, write_image
    from ..inference import register
    from ..metrics import dice_summary, read_label_map
    from ..qa import transform_folding

    set_threads(cfg.threads)
    out: dict = {"output_bytes": {}}
    fixed, moving = as_image(pair.fixed, "fixed"), as_image(pair.moving, "moving")
    bundle = worker_bundle(cfg.model)
    out["domain_warnings"] = domain_warnings(bundle.card, fixed, moving)  # the licence: once, by run_batch
    res = register(fixed, moving, model=bundle, device=cfg.device, refine=cfg.refine, preflight=False)
    out["register_s"] = round(res.timings.get("total", float("nan")), 4)
    out["timings"] = {k: round(v, 4) for k, v in res.timings.items()}
    out["model"], out["device"] = res.model, res.device
    out["refined"] = bool(res.refined)

    def save(key: str, write: Callable[[str], object]) -> None:
        out["output_bytes"][key] = atomic_write(d / OUTPUT_NAMES[key], write)
        out[key] = str(Path("pairs") / pair.id / OUTPUT_NAMES[key])

    save("transform", res.write_transform)  # the same writer as `deepreg register`
    from ..quality import assess
    out.update(assess(res, res.fixed, moving).as_dict())  # trusted, quality_flags, similarity, ...
    if cfg.write_warped:
        save("warped", lambda p: write_image(res.warp_image(moving), p))
    if pair.moving_labels:
        warped_labels = res.warp_labels(pair.moving_labels)
        if cfg.write_warped_labels:
            save("warped_labels", lambda p: write_image(warped_labels, p))
        if pair.fixed_labels:
            fixed_labels = read_label_map(pair.fixed_labels, "fixed_labels")
            check_same_grid(fixed_labels, warped_labels, f"fixed_labels {pair.fixed_labels} and the fixed image")
            dice = dice_summary(fixed_labels, warped_labels)
            out.update({f"dice_{k}": _finite(v) for k, v in dice.items()})
    if pair.moving_labels or pair.fixed_labels:
        # inside the fixed brain: its label map, as `deepreg evaluate --transform`, else its non-zero voxels
        brain = read_image(pair.fixed_labels, sitk.sitkInt32, "fixed_labels") if pair.fixed_labels else res.fixed != 0
        fold = transform_folding(res.transform(), res.fixed, spacing=cfg.folding_spacing_mm, mask=brain)
        out.update({k: _finite(v) for k, v in fold.items()})
    return out
