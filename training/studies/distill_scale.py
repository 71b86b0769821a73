"""Size of the flow-distillation term against the similarity term at the start of a distillation run.

Used to set ``loss.distill`` so that the two terms start about equal (``ldr_flowdistill``):

    python -m training.studies.distill_scale training/runs/teacher_rcn_v1stack Resources/models/ldr_brain_v1

Prints the mean over every 13th training pair (no flips) of the flow distillation term
(mm^2, :func:`training.losses.flow_distillation_loss`) between the student and the teacher,
and of the student's ``1 - CC``.
"""
from __future__ import annotations

import argparse
import json

import torch

from DeepRegLib.similarity import Similarity
from DeepRegLib.spatial import warp

from ..config import DataConfig
from ..data import load_split, make_batch
from ..losses import flow_distillation_loss
from ..networks import load_trained
from ..strategies.distill import load_teacher


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m training.studies.distill_scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("teacher", help="teacher run folder (best.pt)")
    p.add_argument("student", help="student bundle folder or run folder")
    p.add_argument("--every", type=int, default=13)
    a = p.parse_args(argv)
    data = load_split(DataConfig(task="mindboggle"), "train")
    teacher = load_teacher(a.teacher, torch.device("cpu"))
    student = load_trained(a.student).eval()
    dist, sim = [], []
    with torch.no_grad():
        for i in range(0, len(data), a.every):
            b = make_batch(data, [i])
            fs, _ = student(b["fixed"], b["moving"])
            ft, _ = teacher(b["fixed"], b["moving"])
            dist.append(float(flow_distillation_loss(fs, ft, b["spacing"])))
            sim.append(float(Similarity("cc").loss(b["fixed"], warp(b["moving"], fs))))
    out = {"pairs": len(dist), "distill_mm2": sum(dist) / len(dist), "one_minus_cc": sum(sim) / len(sim)}
    out["weight_for_equal_terms"] = out["one_minus_cc"] / out["distill_mm2"]
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
