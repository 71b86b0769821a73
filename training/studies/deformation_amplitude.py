"""Mean displacement (mm) of the known smooth deformations ``training/data/same_subject.py`` draws, per velocity
standard deviation and control-point spacing, on the 80 x 96 x 80 grid at 2 mm (mean over the whole grid and
over ``--draws`` random draws). It is how ``ldr_precise``'s range (0-3 mm velocity std: mean displacement
0-2.5 mm) was found to miss the benchmark's ~5 and ~8 mm pairs (``training/RESULTS.md``, *Precision training*).

    python -m training.studies.deformation_amplitude [--amplitudes 1.5 3 5 8] [--controls 24 42 60]
"""
from __future__ import annotations

import argparse

import numpy as np

from ..data.same_subject import smooth_diffeomorphic_flow

SHAPE, SPACING = (80, 96, 80), (2.0, 2.0, 2.0)


def mean_displacement_mm(amplitude_mm: float, control_mm: float, draws: int = 4) -> float:
    """Mean over ``draws`` seeds of the mean length (mm) of the flow of one random deformation."""
    lengths = [float((smooth_diffeomorphic_flow(np.random.default_rng(seed), SHAPE, SPACING, amplitude_mm, control_mm)[0]
                      * SPACING[0]).norm(dim=0).mean()) for seed in range(draws)]
    return float(np.mean(lengths))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--amplitudes", type=float, nargs="+", default=[1.5, 3.0, 5.0, 8.0])
    p.add_argument("--controls", type=float, nargs="+", default=[24.0, 42.0, 60.0])
    p.add_argument("--draws", type=int, default=4)
    a = p.parse_args(argv)
    print("| velocity std (mm) | " + " | ".join(f"control {c:g} mm" for c in a.controls) + " |")
    print("|---|" + "---|" * len(a.controls))
    for amp in a.amplitudes:
        print(f"| {amp:g} | " + " | ".join(f"{mean_displacement_mm(amp, c, a.draws):.2f}" for c in a.controls) + " |")


if __name__ == "__main__":
    main()
