"""Grid validation plus known-answer validation of trained networks, as ``ldr_precise`` selects on them.

For each model (a bundle name or folder, a run folder or a checkpoint): label Dice of the Mindboggle
validation pairs on the network grid and the errors on the known-answer pairs of
:func:`training.data.same_subject.validation_pairs` (Mindboggle 17, 18, 19 and the first 4 IXI validation
brains). ``--val-cache`` / ``--ixi-cache`` name prepared pair files (``training/cache/*.npz``) to validate on
exactly what a run validated on; by default the current data preparation builds them.

    python -m training.studies.known_answer_report ldr_brain_v2 training/runs/ldr_precise_lr3e5/best.pt \\
        [--val-cache training/cache/mindboggle-val-....npz --ixi-cache training/cache/ixi-val-....npz]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main(argv=None) -> None:
    from DeepRegLib.bundles import load_bundle

    from ..config import DataConfig
    from ..data import load_split
    from ..data.cache import load_pairset
    from ..data.registry import load_ixi
    from ..data.same_subject import validation_pairs
    from ..evaluate import evaluate_grid, evaluate_known
    from ..networks import load_trained

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--val-cache", default=None, help="prepared Mindboggle validation pairs (.npz)")
    ap.add_argument("--ixi-cache", default=None, help="prepared IXI validation pairs (.npz)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = DataConfig(task="mindboggle", same_subject=0.5, ixi_share=0.5)
    val = load_pairset(Path(a.val_cache)) if a.val_cache else load_split(cfg, "val")
    ixi = load_pairset(Path(a.ixi_cache)) if a.ixi_cache else load_ixi(cfg, "val")
    known = validation_pairs([val, ixi])
    for name in a.models:
        p = Path(name)
        net = load_trained(name) if (p.suffix == ".pt" or (p / "best.pt").exists()) else load_bundle(name).network("cpu")
        out = evaluate_grid(net, val)
        out.update(evaluate_known(net, known))
        out["dice_precise"] = out["dice"] - 0.05 * out["known_error_mm"]
        print(name, json.dumps({k: round(v, 4) for k, v in out.items()}), flush=True)


if __name__ == "__main__":
    main()
