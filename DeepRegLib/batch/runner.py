"""Register a cohort on Dask: ``deepreg batch`` and :func:`run_batch`.

Pairs come from a CSV (:func:`read_pairs_csv`: columns ``fixed, moving`` and optionally
``moving_labels, fixed_labels, id``) or an atlas and a list of subjects (:func:`atlas_pairs`).
Each pair is one Dask task, run by :func:`DeepRegLib.batch.task.process_pair` on a worker
process that loaded the model once (:class:`~DeepRegLib.batch.task.ModelPreload`).  By default
a ``distributed.LocalCluster`` of process workers runs on this machine, one pair at a time per
worker; ``scheduler="tcp://host:8786"`` runs the same tasks on an existing cluster.

Faults: a bad pair is recorded as ``failed`` with its message and the rest go on.  A worker that
dies is replaced (its nanny restarts it); the pair it was registering is retried once (each start
is logged in the pair's ``.attempts``), pairs merely queued on it are resubmitted.  Resume: a pair whose ``result.json`` says ``ok``
for the same inputs and settings, with all its outputs present, is ``skipped``.
Outputs: ``OUT/pairs/<id>/...`` and the summary files of :mod:`DeepRegLib.batch.summary`.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

from .summary import write_summary
from .task import (ModelPreload, Pair, TaskConfig, completed_record, process_pair, refine_key,
                         started_attempts)
from ..errors import DeepRegError, InputError
from ..safeio import check_folder_writable, check_input_file

COLUMNS = ("fixed", "moving", "moving_labels", "fixed_labels", "id")
__all__ = ["Pair", "BatchConfig", "BatchReport", "read_pairs_csv", "atlas_pairs", "run_batch"]


@dataclass
class BatchConfig:
    """Settings of a batch.

    ``workers``: Dask worker processes of the local cluster (default: CPU cores //
    ``threads_per_worker``); ignored with ``scheduler``.  ``threads_per_worker``: CPU threads
    (torch and ITK) of each registration; each worker registers one pair at a time.  Results are
    bit-identical to ``deepreg register`` run with the same number of threads.
    """

    model: Optional[str] = None
    device: str = "auto"
    refine: Any = None  # None: the model card's default refinement; False: none; True: full; or a RefineConfig
    write_warped: bool = False
    write_warped_labels: bool = False
    workers: Optional[int] = None
    threads_per_worker: int = 1
    scheduler: Optional[str] = None
    memory_limit: str = "auto"
    folding_spacing_mm: float = 1.0  # grid of the folding check (with labels); 2.0 is ~8x cheaper


@dataclass
class BatchReport:
    """What :func:`run_batch` returns: one record per pair (input order) and the summary aggregates."""

    output_dir: Path
    records: List[dict]
    summary: dict
    registered: int = 0  # pairs registered in this run (not skipped)

    @property
    def failed(self) -> List[dict]:
        return [r for r in self.records if r["status"] == "failed"]


# ----------------------------------------------------------------------------- pairs

def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "pair"


def _strip_ext(name: str) -> str:
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _short_names(paths: Sequence[str]) -> Dict[str, str]:
    """Shortest trailing path parts (extension dropped) that tell the distinct paths apart."""
    uniq = sorted(set(paths))
    parts = {p: list(PurePath(p).parts[:-1]) + [_strip_ext(PurePath(p).name)] for p in uniq}
    for k in range(1, max((len(v) for v in parts.values()), default=1) + 1):
        names = {p: "_".join(v[-k:]) for p, v in parts.items()}
        if len(set(names.values())) == len(names):
            return names
    return {p: _safe_id(p) for p in uniq}


def _resolve(path: str, base: Path) -> str:
    """``path`` made absolute (relative to ``base``): a pair is then the same wherever the command runs."""
    p = Path(os.path.expanduser(path.strip()))
    return os.path.abspath(p if p.is_absolute() else (base / p))


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")  # -sig: a spreadsheet's byte-order mark
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                         "save it as UTF-8 (in a spreadsheet: CSV UTF-8)") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _finish_pairs(rows: List[dict]) -> List[Pair]:
    """Pairs with ids: given ids are sanitised; missing ones are ``<moving>_to_<fixed>`` short names."""
    fixed_names = _short_names([r["fixed"] for r in rows])
    moving_names = _short_names([r["moving"] for r in rows])
    pairs, seen = [], {}
    for i, r in enumerate(rows):
        pid = _safe_id(r.get("id") or f"{moving_names[r['moving']]}_to_{fixed_names[r['fixed']]}")
        if pid in seen:
            raise InputError(f"pair {i + 1} has the same id {pid!r} as pair {seen[pid] + 1}; "
                             "give each pair a distinct 'id' (or list each pair once)")
        seen[pid] = i
        pairs.append(Pair(pid, r["fixed"], r["moving"], r.get("moving_labels") or None, r.get("fixed_labels") or None))
    return pairs


def read_pairs_csv(path: str | os.PathLike) -> List[Pair]:
    """Pairs from a CSV with a header: ``fixed, moving`` and optionally ``moving_labels, fixed_labels, id``.

    Relative paths are relative to the CSV's folder.  Empty label cells mean no labels.
    """
    path = Path(check_input_file(path, "--pairs", kind="pairs file")).absolute()
    text = _read_text(path, "pairs file")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("fixed", "moving") if c not in header]
    if missing:
        raise InputError(f"{path}: the header must name the columns fixed and moving "
                         f"(optional: moving_labels, fixed_labels, id); missing {missing}, found {header}")
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise InputError(f"{path}: unknown columns {unknown}; allowed: {list(COLUMNS)}")
    rows = []
    for n, raw in enumerate(reader, start=2):
        r = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(r.values()):
            continue
        if not r.get("fixed") or not r.get("moving"):
            raise InputError(f"{path}, line {n}: fixed and moving are required")
        for k in ("fixed", "moving", "moving_labels", "fixed_labels"):
            if r.get(k):
                r[k] = _resolve(r[k], path.parent)
        rows.append(r)
    if not rows:
        raise InputError(f"{path} lists no pairs")
    return _finish_pairs(rows)


def atlas_pairs(fixed: str | os.PathLike, moving_list: str | os.PathLike,
                fixed_labels: str | os.PathLike | None = None) -> List[Pair]:
    """Every subject of ``moving_list`` registered to one atlas ``fixed``.

    ``moving_list``: one moving image per line, optionally followed by a comma or tab and its
    label map; blank lines and lines starting with ``#`` are ignored; relative paths are relative
    to the list's folder.
    """
    lst = Path(check_input_file(moving_list, "--moving-list", kind="moving list")).absolute()
    rows = []
    for line in _read_text(lst, "moving list").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [c.strip() for c in re.split(r"[,\t]", line) if c.strip()]
        if len(cells) > 2:
            raise InputError(f"{lst}: expected 'moving[,moving_labels]' per line, got {line!r}")
        rows.append({"fixed": os.path.abspath(fixed), "moving": _resolve(cells[0], lst.parent),
                     "moving_labels": _resolve(cells[1], lst.parent) if len(cells) > 1 else None,
                     "fixed_labels": os.path.abspath(fixed_labels) if fixed_labels else None})
    if not rows:
        raise InputError(f"{lst} lists no moving images")
    return _finish_pairs(rows)


# ----------------------------------------------------------------------------- progress

class ProgressBar:
    """A one-line progress bar on a terminal (``\\r`` updates), one line per pair otherwise."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, enabled: bool = True) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.t0 = time.perf_counter()

    def _line(self) -> str:
        done = sum(self.counts.values())
        width = 24
        fill = int(width * done / max(1, self.total))
        el = time.perf_counter() - self.t0
        ran = self.counts["ok"] + self.counts["failed"]
        todo = self.total - done
        eta = f"  eta {el / ran * todo:.0f} s" if ran and todo else ""
        rate = f"  {60 * ran / el:.1f} pairs/min" if ran and el > 0 else ""
        c = self.counts
        return (f"[deepreg batch] [{'#' * fill}{'-' * (width - fill)}] {done}/{self.total}  ok {c['ok']}  "
                f"failed {c['failed']}  skipped {c['skipped']}{rate}{eta}")

    def update(self, rec: dict) -> None:
        self.counts[rec["status"]] += 1
        if not self.enabled:
            return
        note = f"  {rec['id']}: {rec['status']}" + (f" ({rec['message']})" if rec["status"] == "failed" else "")
        if self.tty:
            if rec["status"] == "failed":
                self.stream.write("\r\033[K" + note.strip() + "\n")
            self.stream.write("\r\033[K" + self._line())
        else:
            self.stream.write(self._line() + note + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ----------------------------------------------------------------------------- running

#: For ``dask worker`` processes you start yourself: ``export WORKER_ENVIRON_VARIABLE="<repr of
#: OWN_WORKER_ENVIRON>"`` first. Dask merges that variable into its pre-spawn environment, so its
#: MALLOC_TRIM_THRESHOLD_ can only be raised there, not removed; with a fixed mmap threshold as well,
#: the refinement ran as fast as without either (0.36-0.41 s against 1.3-1.7 s with Dask's setting).
WORKER_ENVIRON_VARIABLE = "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON"
OWN_WORKER_ENVIRON = {"MALLOC_TRIM_THRESHOLD_": 256 * 2 ** 20, "MALLOC_MMAP_THRESHOLD_": 64 * 2 ** 20}


def worker_environ() -> dict:
    """Dask's pre-spawn environment for worker processes without its ``MALLOC_*`` settings (see
    :func:`local_cluster`): ``{'OMP_NUM_THREADS': 1, ...}``."""
    import dask
    import distributed  # noqa: F401  (registers the distributed config defaults)
    environ = dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}
    return {k: v for k, v in environ.items() if not k.startswith("MALLOC_")}


def local_cluster(cfg: BatchConfig):
    """The `distributed.LocalCluster` that :func:`run_batch` starts for ``cfg`` (process workers)."""
    import logging

    import dask
    from distributed import LocalCluster
    threads = max(1, cfg.threads_per_worker)
    workers = cfg.workers or max(1, (os.cpu_count() or 1) // threads)
    # One Dask thread per worker: a registration uses `threads` CPU threads of its own.
    # allowed_failures=0: when a worker dies, Dask fails every pair it held at once (KilledWorker),
    # and run_batch retries those itself: once for the pair that was running, and freely for pairs
    # that were only queued there (Dask would count those as suspects too).
    # A dead worker's restart (spawn, import torch, load the model) can take longer than Dask's 15 s
    # lost-worker timeout on a busy machine, after which the cluster would give up on that worker.
    # This setting is read when a worker is lost, so it is set for this process, not in a context.
    dask.config.set({"distributed.deploy.lost-worker-timeout": "300s"})
    # Dask spawns workers with MALLOC_TRIM_THRESHOLD_=65536. Setting it also turns off glibc's dynamic
    # mmap threshold, so every tensor over 128 KiB is mapped and unmapped again, page faults each time:
    # the network took 2x and the few-step refinement 4x as long (0.32 -> 1.3 s) as in a plain process.
    # The workers get glibc's defaults, as `deepreg register` has.
    dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()})
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        memory_limit=cfg.memory_limit, silence_logs=logging.ERROR,
                        scheduler_kwargs={"allowed_failures": 0})


def _failed(pair: Pair, message: str, run_id: str) -> dict:
    return {"id": pair.id, "status": "failed", "message": message, "fixed": pair.fixed, "moving": pair.moving,
            "moving_labels": pair.moving_labels, "fixed_labels": pair.fixed_labels, "run_id": run_id}


#: a pair that was only queued on workers that died is resubmitted at most this many times
MAX_RESUBMITS = 4


def _lost_pair_message(exc: BaseException, started: int) -> str:
    from distributed import KilledWorker
    if isinstance(exc, KilledWorker):
        return (f"the worker process died while registering this pair, {started} times (out of memory or a "
                "crash); not retried again")
    return f"{type(exc).__name__}: {exc}"


def check_config(cfg: BatchConfig) -> None:
    """:class:`InputError` for settings that no pair could use (checked before any work)."""
    if cfg.threads_per_worker < 1 or (cfg.workers is not None and cfg.workers < 1):
        raise InputError(f"workers and threads per worker must be >= 1, got {cfg.workers}, {cfg.threads_per_worker}")
    spacing = cfg.folding_spacing_mm
    if not isinstance(spacing, (int, float)) or not math.isfinite(spacing) or spacing <= 0:
        raise InputError(f"the folding check's grid spacing must be a positive number of mm, got {spacing}")


def run_batch(pairs: Sequence[Pair], output_dir: str | os.PathLike, config: Optional[BatchConfig] = None, *,
              client=None, progress: bool = True,
              on_record: Optional[Callable[[dict], None]] = None,
              notice: Optional[Callable[[str], None]] = None) -> BatchReport:
    """Register every pair on Dask; write per-pair outputs and the summary under ``output_dir``.

    ``client``: an existing ``distributed.Client`` to use as is (the caller owns its cluster);
    otherwise ``config.scheduler`` is connected to, or a local cluster started and closed here.
    Pairs already done with the same inputs and settings are ``skipped`` (no registration).
    Returns records in the order of ``pairs``; never raises for a bad pair.
    ``notice``: where the model's licence notice goes, once per user (default: a Python warning); each
    pair's domain warnings are in its record (``domain_warnings``).
    """
    cfg = config or BatchConfig()
    if not pairs:
        raise InputError("no pairs to register")
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        raise InputError("pair ids must be distinct")
    check_config(cfg)
    from ..bundles import card_refinement, load_bundle, split_reference, with_task
    bundle = load_bundle(cfg.model)  # an unknown model or task fails here, before any worker starts
    bundle.check_weights_file()      # so does a truncated or malicious weights file
    from ..bundles.preflight import as_warning, preflight
    preflight(bundle.card, write=notice or as_warning)
    name, task = split_reference(cfg.model) if cfg.model else (None, None)
    model = with_task(str(Path(name).resolve()), task) if name and Path(name).is_dir() else bundle.name
    out = Path(check_folder_writable(output_dir, "output folder")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # absolute paths: workers may run elsewhere, and the pair's identity (resume) must not depend on the cwd
    pairs = [replace(p, **{k: os.path.abspath(v) for k in ("fixed", "moving", "moving_labels", "fixed_labels")
                           if (v := getattr(p, k))}) for p in pairs]
    refine = cfg.refine if cfg.refine is not None else (card_refinement(bundle.card) or False)
    tcfg = TaskConfig(str(out), model, cfg.device, refine, cfg.write_warped,
                      cfg.write_warped_labels, max(1, cfg.threads_per_worker), float(cfg.folding_spacing_mm))
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    records: Dict[str, dict] = {}
    todo = []
    bar = ProgressBar(len(pairs), enabled=progress)
    for p in pairs:
        done = completed_record(p, tcfg)
        if done is None:
            todo.append(p)
        else:
            records[p.id] = {**done, "status": "skipped", "message": f"done in run {done.get('run_id')}"}
            bar.update(records[p.id])
            if on_record:
                on_record(records[p.id])
    run = {"run_id": run_id, "model": model, "device": cfg.device, "refine": refine_key(tcfg.refine),
           "threads_per_worker": tcfg.threads, "scheduler": None, "workers": 0, "registered": len(todo)}
    if todo:
        t_dask = time.perf_counter()
        run.update(_run_on_dask(todo, tcfg, cfg, run_id, client, records, bar, on_record))
        run["dask_wall_s"] = round(time.perf_counter() - t_dask, 3)
        run["pairs_per_min"] = round(60 * len(todo) / max(run["dask_wall_s"], 1e-9), 2)
        # after start-up (cluster, model load): the rate a long batch approaches
        run["pairs_per_min_after_startup"] = round(60 * len(todo) / max(run["dask_wall_s"] - run["startup_s"], 1e-9), 2)
    bar.close()
    run["wall_s"] = round(time.perf_counter() - t0, 3)
    ordered = [records[p.id] for p in pairs]
    summary = write_summary(ordered, out, run)
    return BatchReport(out, ordered, summary, registered=len(todo))


def _run_on_dask(todo: List[Pair], tcfg: TaskConfig, cfg: BatchConfig, run_id: str, client,
                 records: Dict[str, dict], bar: ProgressBar, on_record) -> dict:
    try:
        from distributed import Client, KilledWorker, as_completed
    except ImportError as exc:
        raise DeepRegError("deepreg batch needs Dask: pip install 'dask[distributed]' "
                           "(or the 'batch' extra of this package)") from exc
    cluster = own_client = None
    t_start = time.perf_counter()
    try:
        if client is None:
            if cfg.scheduler:
                client = own_client = Client(cfg.scheduler)
            else:
                cluster = local_cluster(cfg)
                client = own_client = Client(cluster)
        client.register_plugin(ModelPreload(tcfg.model, tcfg.device, tcfg.threads),
                               name=f"deepreg-model-{tcfg.model}-{tcfg.device}-{tcfg.threads}")
        info = {"scheduler": client.scheduler.address, "workers": len(client.scheduler_info()["workers"]),
                "startup_s": round(time.perf_counter() - t_start, 3)}  # cluster start + model load
        futures, resubmits = {}, {}

        def submit(p: Pair):
            n = resubmits.get(p.id, 0)
            key = f"deepreg-{p.id}-{run_id}" + (f"-r{n}" if n else "")
            fut = client.submit(process_pair, p, tcfg, run_id, key=key, pure=False)
            futures[fut] = p
            return fut

        queue = as_completed([submit(p) for p in todo])
        for fut in queue:
            pair = futures.pop(fut)
            try:
                rec = fut.result()
            except Exception as exc:  # process_pair never raises: its worker died (KilledWorker)
                started = started_attempts(tcfg.output_dir, pair.id, run_id)
                if isinstance(exc, KilledWorker) and started < 2 and resubmits.get(pair.id, 0) < MAX_RESUBMITS:
                    resubmits[pair.id] = resubmits.get(pair.id, 0) + 1
                    queue.add(submit(pair))  # retried: once if it was running, else it was only queued
                    continue
                rec = _failed(pair, _lost_pair_message(exc, started), run_id)
            records[pair.id] = rec
            bar.update(rec)
            if on_record:
                on_record(rec)
        return info
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()
