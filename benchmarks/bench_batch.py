"""Throughput of ``deepreg batch`` (Dask) against a loop of ``deepreg register`` commands.

On the 6 ordered pairs of the validation subjects (Mindboggle OASIS-TRT-20 17, 18, 19; the bundled
sample pair both ways if ../shared/data is absent), all in this script, so the ratios hold on a
shared machine even when absolute times drift:

* **CLI loop**: one ``deepreg register`` process per pair (what a shell loop does), sequentially;
* **deepreg batch** (the command, in a fresh process, local cluster started by it) with 1 worker x
  2 threads, 1 worker x 1 thread and 2 workers x 1 thread, on a cohort of ``--repeats`` x 6 pairs
  (distinct ids); pairs/min end to end (command wall) and after start-up (cluster + model load);
* **peak memory per worker** (VmHWM of each worker process, from the summary);
* **a model of a cluster**: a ``dask scheduler`` on localhost and ``dask worker`` processes (1, 2,
  3, 4 workers x 1 thread, started before the timing, as a cluster's would be), then
  ``deepreg batch --scheduler tcp://...``: how throughput scales with workers on this machine;
* one labelled run (Dice, folding) whose summary JSON and PNG are kept.

Every batch writes the transform only (as the CLI loop does), except the labelled run.
Writes ``benchmarks/results/bench_batch.json`` and ``.md`` (+ ``bench_batch_dice_time.png``).

    python benchmarks/bench_batch.py [--repeats 4]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data" / "brain-mindboggle-oasis-trt20"
VALIDATION = [17, 18, 19]
RESULTS = REPO / "benchmarks" / "results"
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

from DeepRegLib.batch.runner import OWN_WORKER_ENVIRON, WORKER_ENVIRON_VARIABLE  # noqa: E402


def subject(n: int) -> dict:
    base = (SHARED if SHARED.is_dir() else REPO / "Resources" / "SampleData") / f"OASIS-TRT-20-{n}"
    return {"image": base / "t1weighted_brain.nii.gz", "labels": base / "labels.DKT31.manual+aseg.nii.gz"}


def pairs() -> list:
    subs = VALIDATION if SHARED.is_dir() else [17, 18]
    return [(f, m) for f, m in itertools.permutations(subs, 2)]


def write_csv(path: Path, repeats: int, labels: bool = False) -> Path:
    lines = ["fixed,moving,moving_labels,fixed_labels,id"]
    for r in range(repeats):
        for f, m in pairs():
            sf, sm = subject(f), subject(m)
            ml, fl = (sm["labels"], sf["labels"]) if labels else ("", "")
            lines.append(f"{sf['image']},{sm['image']},{ml},{fl},r{r}_{m}_to_{f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def deepreg(*args: str) -> tuple:
    """Run ``deepreg ARGS`` in a fresh interpreter: its wall time and the CPU seconds (user + system)
    of it and its descendants (the local cluster's worker processes are waited for, so they count)."""
    c0, t = children_cpu_s(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "DeepRegLib.cli", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"deepreg {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall, children_cpu_s() - c0


def tree_cpu_s(pid: int) -> float:
    """CPU seconds so far of a running process and its children (the cluster model's workers)."""
    import psutil
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def cli_loop(tmp: Path) -> dict:
    walls, cpus = [], []
    for f, m in pairs():
        w, c = deepreg("register", "--fixed", str(subject(f)["image"]), "--moving", str(subject(m)["image"]),
                       "--output-transform", str(tmp / f"cli_{m}_to_{f}.h5"), "--device", "cpu")
        walls.append(w)
        cpus.append(c)
    total = sum(walls)
    return {"pairs": len(walls), "wall_s": round(total, 2), "median_s_per_pair": round(statistics.median(walls), 3),
            "pairs_per_min": round(60 * len(walls) / total, 2), "cpu_s_per_pair": round(sum(cpus) / len(cpus), 3)}


def batch_run(csv: Path, out: Path, extra: list, cluster_pid: int = None) -> dict:
    c0 = tree_cpu_s(cluster_pid) if cluster_pid else 0.0
    wall, cpu = deepreg("batch", "--pairs", str(csv), "--output-dir", str(out), "--device", "cpu", "--no-progress",
                        *extra)
    cpu += (tree_cpu_s(cluster_pid) - c0) if cluster_pid else 0.0
    s = json.loads((out / "summary.json").read_text())
    n = s["counts"]["ok"]
    assert s["counts"]["failed"] == 0, s["failures"]
    rss = s["metrics"]["worker_peak_rss_mb"]
    shutil.rmtree(out / "pairs", ignore_errors=True)  # ~15 MB per transform
    return {"pairs": n, "wall_s": round(wall, 2), "pairs_per_min": round(60 * n / wall, 2),
            "startup_s": s["run"]["startup_s"], "pairs_per_min_after_startup": s["run"]["pairs_per_min_after_startup"],
            "median_register_s": round(s["metrics"]["register_s"]["median"], 3),
            "peak_rss_mb_per_worker_max": rss["max"], "workers": s["run"]["workers"],
            "cpu_s_per_pair": round(cpu / n, 3), "summary": s}


def cluster_model(tmp: Path, csv: Path, warm_csv: Path, n_workers: int) -> dict:
    """``dask scheduler`` + ``dask worker`` processes on localhost; ``deepreg batch --scheduler``."""
    sched_file = tmp / f"scheduler_{n_workers}.json"
    dask_cli = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    sched = subprocess.Popen(dask_cli + ["--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                         "--scheduler-file", str(sched_file)],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    worker = None
    try:
        for _ in range(600):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                   "--nworkers", str(n_workers), "--nthreads", "1", "--no-dashboard",
                                   "--memory-limit", "0"],
                                  env={**ENV, WORKER_ENVIRON_VARIABLE: repr(OWN_WORKER_ENVIRON)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        from distributed import Client
        with Client(address) as c:
            c.wait_for_workers(n_workers, timeout=300)
        batch_run(warm_csv, tmp / f"warm_{n_workers}", ["--scheduler", address])  # model loaded on the workers
        r = batch_run(csv, tmp / f"cluster_{n_workers}", ["--scheduler", address], cluster_pid=worker.pid)
        r.pop("summary")
        return r
    finally:
        for p in (worker, sched):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=4, help="cohort = repeats x the 6 validation pairs")
    ap.add_argument("--cluster-workers", type=int, nargs="*", default=[1, 2, 3, 4])
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        cohort = write_csv(tmp / "cohort.csv", a.repeats)
        warm = tmp / "warm.csv"
        warm.write_text("\n".join(cohort.read_text().splitlines()[:3]) + "\n")
        res = {"pairs": [f"{m}->{f}" for f, m in pairs()], "repeats": a.repeats,
               "cohort_pairs": a.repeats * len(pairs()), "cpu_count": os.cpu_count(),
               "platform": platform.platform(), "python": platform.python_version(),
               "load_average_at_start": os.getloadavg()}
        print("CLI loop ...", flush=True)
        res["cli_loop"] = cli_loop(tmp)
        print(res["cli_loop"], flush=True)
        res["batch"] = {}
        for w, t in ((1, 2), (1, 1), (2, 1)):
            name = f"{w}w x {t}t"
            print(f"deepreg batch {name} ...", flush=True)
            r = batch_run(cohort, tmp / f"batch_{w}_{t}", ["--workers", str(w), "--threads-per-worker", str(t)])
            r.pop("summary")
            r["ratio_vs_cli_loop"] = round(r["pairs_per_min"] / res["cli_loop"]["pairs_per_min"], 2)
            r["ratio_after_startup_vs_cli_loop"] = round(r["pairs_per_min_after_startup"] /
                                                         res["cli_loop"]["pairs_per_min"], 2)
            res["batch"][name] = r
            print(r, flush=True)
        res["cluster_model"] = {}
        for n in a.cluster_workers:
            print(f"cluster model, {n} workers ...", flush=True)
            r = cluster_model(tmp, cohort, warm, n)
            r["ratio_vs_cli_loop"] = round(r["pairs_per_min"] / res["cli_loop"]["pairs_per_min"], 2)
            res["cluster_model"][str(n)] = r
            print(r, flush=True)
        print("labelled run (Dice, folding) ...", flush=True)
        lab = batch_run(write_csv(tmp / "labelled.csv", 1, labels=True), tmp / "labelled", ["--workers", "2"])
        res["labelled_run"] = {k: v for k, v in lab.items() if k != "summary"}
        res["labelled_run"]["metrics"] = lab["summary"]["metrics"]
        res["load_average_at_end"] = os.getloadavg()
        RESULTS.mkdir(parents=True, exist_ok=True)
        png = tmp / "labelled" / "summary_dice_time.png"
        if png.exists():
            shutil.copy(png, RESULTS / "bench_batch_dice_time.png")
        (RESULTS / "bench_batch.json").write_text(json.dumps(res, indent=2))
        (RESULTS / "bench_batch.md").write_text(table(res))
        print(table(res))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def table(res: dict) -> str:
    cli = res["cli_loop"]
    la = lambda k: ", ".join(f"{x:.1f}" for x in res[k])  # noqa: E731
    lines = [f"# deepreg batch throughput ({res['cohort_pairs']} pair registrations = {res['repeats']} x "
             f"{len(res['pairs'])} validation pairs; {res['cpu_count']} CPUs, shared machine)", "",
             f"Load average (1, 5, 15 min) at start {la('load_average_at_start')}, at end {la('load_average_at_end')}. "
             "CPU s / pair: user + system seconds of every process of the run (client and workers), per pair.", "",
             "| run | pairs/min end to end | x CLI loop | pairs/min after start-up | x CLI loop | start-up s | "
             "median register() s | CPU s / pair | peak RSS / worker MB |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| `deepreg register` loop ({cli['pairs']} pairs) | {cli['pairs_per_min']} | 1.00 | | | | "
             f"{cli['median_s_per_pair']} (wall per command) | {cli['cpu_s_per_pair']} | |"]
    for name, r in res["batch"].items():
        lines.append(f"| `deepreg batch` {name} | {r['pairs_per_min']} | {r['ratio_vs_cli_loop']:.2f} | "
                     f"{r['pairs_per_min_after_startup']} | {r['ratio_after_startup_vs_cli_loop']:.2f} | "
                     f"{r['startup_s']} | {r['median_register_s']} | {r['cpu_s_per_pair']} | "
                     f"{r['peak_rss_mb_per_worker_max']} |")
    lines += ["", "Cluster model: `dask scheduler` + `dask worker --nthreads 1` processes on localhost (already "
              "running, model loaded), `deepreg batch --scheduler tcp://...`:", "",
              "| workers | pairs/min | x CLI loop | median register() s | CPU s / pair | peak RSS / worker MB |",
              "|---|---|---|---|---|---|"]
    for n, r in res["cluster_model"].items():
        lines.append(f"| {n} | {r['pairs_per_min']} | {r['ratio_vs_cli_loop']:.2f} | {r['median_register_s']} | "
                     f"{r['cpu_s_per_pair']} | {r['peak_rss_mb_per_worker_max']} |")
    m = res["labelled_run"]["metrics"]
    lines += ["", f"Labelled run (6 pairs, 2 workers, Dice + folding): Dice median {m['dice_all']['median']:.3f} "
              f"(IQR {m['dice_all']['iqr']:.3f}), subcortical {m['dice_subcortical']['median']:.3f}, cortical "
              f"{m['dice_cortical']['median']:.3f}; folding median {m['folding_percent']['median']:.4f} %; "
              f"time per pair median {m['time_s']['median']:.2f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
