"""Choose a model's default (few-step) refinement on validation: known-answer error, inter-subject Dice, time.

Each candidate is the card's ``refinement.default`` with some fields changed (``KEY=VALUE,KEY=VALUE``;
``card``: unchanged). For each, on the validation brains, the default call ``register(refine=candidate)``:

* the known-answer pairs of ``bench_precision.py`` (identical, rigid, smooth deformations of ~2/5/8 mm; 3
  Mindboggle + 2 IXI brains): median over pairs of the mean mapping error (mm), and the largest displacement
  of an identical pair;
* the 6 ordered Mindboggle validation pairs: mean subcortical / cortical Dice, and median seconds of the
  refinement and of the whole call (noisy under load: compare candidates of one run only).

``--update-card NAME`` writes candidate NAME into the card's ``refinement.default`` with the command and these
measurements (appended to ``refinement.default_changes``). Measurements are from ``tune_affine.py``'s functions.
``--full``: the same for the card's full refinement (``refinement.full``, what ``--refine`` runs; changes
appended to ``refinement.full_changes``).

    python benchmarks/tune_default.py --model ldr_brain_v3 --threads 1 \\
        --candidates card start_smoothing_mm=2.0,max_steps=4 --out benchmarks/results/tune_default
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tune_affine import inter_subject, known_answer, parse_candidate  # noqa: E402

from DeepRegLib.bundles import (DEFAULT_MODEL, card_full_refinement, card_refinement, load_bundle,  # noqa: E402
                                update_card)

KINDS = ["identical", "rigid", "deformed-2", "deformed-5", "deformed-8"]


def markdown(model: str, command: str, results: dict, which: str = "default") -> str:
    lines = [f"# {which.capitalize()} refinement of `{model}` on validation", "", f"`{command}`", "",
             "| candidate | " + " | ".join(f"{k} (mm)" for k in KINDS)
             + " | identical max (mm) | Dice sub / cort | refine s | register s |",
             "|---|" + "---|" * (len(KINDS) + 4)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in KINDS) + f" | {r['identical_max']:.3f} | "
                     f"{r['dice_subcortical']:.4f} / {r['dice_cortical']:.4f} | {r['refine_s']:.2f} | "
                     f"{r['total_s']:.2f} |")
    lines += ["", "Known-answer columns: median over pairs of the mean error over the fixed brain (the pairs of "
              "`bench_precision.py`); Dice: mean over the 6 ordered validation pairs; seconds: medians over those "
              "pairs, in process, at the run's thread count (the machine may have been shared: compare within a run)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--candidates", nargs="+", default=["card"], help="'card' or KEY=VALUE[,KEY=VALUE...]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tune_default")
    ap.add_argument("--update-card", metavar="NAME", default=None, help="write this candidate into the card")
    ap.add_argument("--full", action="store_true", help="tune the card's full refinement (refinement.full, what "
                    "--refine runs) instead of its default one; the candidates change that config")
    a = ap.parse_args(argv)
    if a.update_card is not None and a.update_card not in a.candidates:
        ap.error(f"--update-card expects one of the candidates {a.candidates}, got {a.update_card!r}")
    torch.set_num_threads(a.threads)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(a.threads)
    bundle = load_bundle(a.model)
    which = "full" if a.full else "default"
    card = (card_full_refinement if a.full else card_refinement)(bundle.card)
    if card is None:
        raise SystemExit(f"{a.model}'s card has no {which} refinement to tune")
    changes = {name: parse_candidate(name) for name in a.candidates}
    configs = {name: replace(card, **changes[name]) for name in a.candidates}  # bad keys fail here
    command = "python benchmarks/tune_default.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = {}
    for name, cfg in configs.items():
        results[name] = {"changes": changes[name], **known_answer(bundle, refine=cfg),
                         **inter_subject(bundle, refine=cfg)}
        print(f"[tune_default] {name}: "
              f"{json.dumps({k: round(v, 4) for k, v in results[name].items() if isinstance(v, float)})}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps({"model": a.model, "command": command, "results": results},
                                                     indent=1))
    text = markdown(a.model, command, results, which)
    a.out.with_suffix(".md").write_text(text)
    print(text)
    if a.update_card:
        block = dict(bundle.card.get("refinement") or {})
        block[which] = {**block[which], **changes[a.update_card]}  # the card's keys and the changes
        # each change after the card was written, in order: the card's inherited setting (its settings_from's)
        # plus these changes is its setting (Testing/engine/test_end_to_end.py checks the default's)
        block[f"{which}_changes"] = list(block.get(f"{which}_changes") or []) + [{
            "changes": changes[a.update_card], "by": command, "measured": results,
            "what": f"known-answer medians (mm), inter-subject Dice and seconds on validation, one candidate per "
                    f"refinement.{which}"}]
        update_card(bundle, {"refinement": block})
        print(f"[tune_default] {a.model}: refinement.{which} {a.update_card} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
