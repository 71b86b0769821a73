"""The LDR + ALDK ablation (issue 27): every arm one command, each against its matched no-teacher control.

Arms (experiment files; the student, data, start and budget are theirs, the teacher is given once):

* ``noteacher`` (``ldr_noteacher``): the control, 1 - CC + smoothness only;
* ``flowdistill`` (``ldr_flowdistill``): plus flow distillation (MSE, mm^2) from the teacher;
* ``aldk_linear`` (``ldr_aldk_linear``): ALDK as the authors' code (linear critic gap of logits);
* ``aldk_squared`` (``ldr_aldk_squared``): ALDK as the seed's text (squared gap of sigmoid scores);

each for every cascade count (1, 2, 3: ``model.cascades``; the students start from ``ldr_brain_v1``'s
first cascade, its two, or its two plus a fresh one) and every seed. One arm is one command::

    python -m training run ldr_aldk_linear --set strategy.teacher=T --set strategy.teacher_store=true \\
        --set model.cascades=2 --set loop.seed=1 --set loop.steps=N --set loop.minutes=0 \\
        --run-dir training/runs/ablation/aldk_linear_c2_s1

(``--plan`` prints them all; the same command resumes). A seed fixes the data order and the start,
so the arm and its control with the same seed and cascades form a *pair*: the report gives each arm's
mean +- sd over seeds of the full-resolution rows (``benchmark_models --known``: Dice, HD95, folding,
SDlogJ, known-answer error, network time, memory) and the paired difference to its control.

    python -m training.studies.aldk_ablation --teacher training/runs/teacher_rcn_ref --steps 300 \\
        --seeds 0 1 --cascades 2 --run --report training/results/aldk_ablation
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[2]
#: arm -> experiment file
ARMS = {"noteacher": "ldr_noteacher", "flowdistill": "ldr_flowdistill", "aldk_linear": "ldr_aldk_linear",
        "aldk_squared": "ldr_aldk_squared"}
CONTROL = "noteacher"
#: the full-resolution columns compared (benchmark_models --known); higher is better for Dice only
COLUMNS = ("dice_subcortical", "dice_cortical", "hd95_mm", "folding_percent", "sdlogj", "known_error_mm",
           "identical_max_mm", "network_seconds", "peak_forward_mb")
#: the columns of the quick report from each run's own last validation (2 mm grid, the trainer's val.csv)
GRID_COLUMNS = ("dice", "dice_subcortical", "dice_cortical", "folding_percent")


@dataclass(frozen=True)
class Arm:
    """One training run of the ablation."""

    arm: str
    cascades: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm}_c{self.cascades}_s{self.seed}"

    @property
    def control(self) -> "Arm":
        """The matched no-teacher run: same cascades, same seed (same data order and start)."""
        return Arm(CONTROL, self.cascades, self.seed)

    def command(self, teacher: str, steps: int, runs: Path, extra: Sequence[str] = ()) -> List[str]:
        """The one ``python -m training`` command that trains (and resumes) this run; ``extra``: more
        ``KEY=VALUE`` settings for every run (e.g. ``loop.threads=1``, which a resume may change)."""
        argv = [sys.executable, "-m", "training", "run", ARMS[self.arm]]
        if self.arm != CONTROL:
            # the teacher's flows on disk: every teacher arm and seed reads the same ones (computed once)
            argv += ["--set", f"strategy.teacher={teacher}", "--set", "strategy.teacher_store=true"]
        argv += ["--set", f"model.cascades={self.cascades}", "--set", f"loop.seed={self.seed}",
                 "--set", f"loop.steps={steps}", "--set", "loop.minutes=0", "--run-dir", str(runs / self.name)]
        for setting in extra:
            argv += ["--set", setting]
        return argv


def plan(arms: Sequence[str], cascades: Sequence[int], seeds: Sequence[int]) -> List[Arm]:
    """Every run, controls first (each teacher arm's control is in the plan even if not asked for)."""
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arms {unknown}; expected some of {sorted(ARMS)}")
    wanted = [CONTROL] + [a for a in arms if a != CONTROL]
    return [Arm(a, c, s) for a in wanted for c in cascades for s in seeds]


def last_validation(run_dir: Path) -> Dict[str, float]:
    """The last row of a run's ``val.csv`` (the trainer's validation at the end of the budget), as floats."""
    import csv
    with open(run_dir / "val.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)}


def paired(rows: Dict[str, Dict[str, float]], runs: Sequence[Arm], column: str) -> Dict[str, Dict[str, float]]:
    """Per (arm, cascades): mean and sd over seeds of ``column`` and of its difference to the matched control.

    ``rows``: run name -> benchmark row. Returns ``{"<arm>_c<k>": {"mean", "sd", "diff_mean", "diff_sd", "n"}}``
    (``sd`` 0 with one seed; differences only for teacher arms whose control row exists)."""
    out: Dict[str, Dict[str, float]] = {}
    groups: Dict[str, List[Arm]] = {}
    for r in runs:
        if r.name in rows:
            groups.setdefault(f"{r.arm}_c{r.cascades}", []).append(r)
    for key, members in groups.items():
        values = [rows[m.name][column] for m in members]
        diffs = [rows[m.name][column] - rows[m.control.name][column] for m in members
                 if m.arm != CONTROL and m.control.name in rows]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        out[key] = {"mean": statistics.fmean(values), "sd": sd(values), "n": len(values)}
        if diffs:
            out[key].update(diff_mean=statistics.fmean(diffs), diff_sd=sd(diffs))
    return out


def table(rows: Dict[str, Dict[str, float]], runs: Sequence[Arm], columns: Sequence[str] = COLUMNS) -> str:
    """A Markdown table: per arm, mean +- sd over seeds, and [paired difference to the control +- sd]."""
    stats = {c: paired(rows, runs, c) for c in columns}
    keys = list(dict.fromkeys(f"{r.arm}_c{r.cascades}" for r in runs if r.name in rows))
    lines = ["| arm | seeds | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for k in keys:
        cells = []
        for c in columns:
            s = stats[c].get(k)
            if not s:
                cells.append("")
                continue
            cell = f"{s['mean']:.4g} ± {s['sd']:.2g}"
            if "diff_mean" in s:
                cell += f" [{s['diff_mean']:+.4g} ± {s['diff_sd']:.2g}]"
            cells.append(cell)
        lines.append(f"| {k} | {stats[columns[0]][k]['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="the teacher's run folder or bundle (e.g. training/runs/teacher_rcn_ref)")
    p.add_argument("--arms", nargs="+", default=list(ARMS))
    p.add_argument("--cascades", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=1200, help="every arm's budget (the 2-cascade students' 1,200 by default)")
    p.add_argument("--runs", type=Path, default=Path("training/runs/ablation"), help="relative to the repository")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting added to every run's command (repeatable), e.g. loop.threads=1")
    p.add_argument("--plan", action="store_true", help="print the commands only")
    p.add_argument("--run", action="store_true", help="train every run (each resumes where it stopped)")
    p.add_argument("--report", type=Path, help="benchmark the runs' last.pt at full resolution and write <DIR>/aldk_ablation.{json,md}")
    p.add_argument("--grid-report", type=Path, help="the quick table from each run's last validation (2 mm grid): "
                   "<DIR>/aldk_ablation_grid.{json,md}")
    a = p.parse_args(argv)
    runs = plan(a.arms, a.cascades, a.seeds)
    for r in runs:
        cmd = r.command(a.teacher, a.steps, a.runs, a.extra)
        print(shlex.join(["python"] + cmd[1:]), flush=True)
        if a.run and not a.plan:
            subprocess.run(cmd, cwd=REPO, check=True)
    if a.grid_report and not a.plan:
        rows = {r.name: last_validation(REPO / a.runs / r.name) for r in runs
                if (REPO / a.runs / r.name / "val.csv").exists()}
        rows = {k: v for k, v in rows.items() if v.get("step", 0) >= a.steps}  # runs that finished their budget
        a.grid_report.mkdir(parents=True, exist_ok=True)
        (a.grid_report / "aldk_ablation_grid.json").write_text(json.dumps(rows, indent=1) + "\n")
        text = (f"Teacher `{a.teacher}`, {a.steps} steps per run, seeds {a.seeds}; each run's last validation on the "
                f"2 mm grid (6 Mindboggle pairs); mean ± sd over seeds [paired difference to `{CONTROL}` with the "
                "same cascades and seed ± sd].\n\n" + table(rows, runs, GRID_COLUMNS))
        (a.grid_report / "aldk_ablation_grid.md").write_text(text)
        print(text)
    if a.report and not a.plan:
        from .benchmark_models import VALIDATION_SUBJECTS, evaluate_run
        a.report.mkdir(parents=True, exist_ok=True)
        out = a.report / "aldk_ablation.json"
        rows = json.loads(out.read_text()) if out.exists() else {}
        for r in runs:
            last = REPO / a.runs / r.name / "last.pt"
            if r.name not in rows and last.exists():  # the end of the budget, as the curriculum ablation
                rows[r.name] = {k: v for k, v in evaluate_run(last, VALIDATION_SUBJECTS, known=True).items() if k != "per_pair"}
                out.write_text(json.dumps(rows, indent=1) + "\n")
        text = (f"Teacher `{a.teacher}`, {a.steps} steps per run, seeds {a.seeds}; mean ± sd over seeds "
                f"[paired difference to `{CONTROL}` with the same cascades and seed ± sd].\n\n" + table(rows, runs))
        (a.report / "aldk_ablation.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
