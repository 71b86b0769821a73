"""One-off studies and reports behind ``training/RESULTS.md``; each runs as ``python -m training.studies.NAME``.

None of them is used by the trainer: they read run folders, checkpoints and bundles and write
tables, plots or JSON under ``training/results/``. Each study and the RESULTS.md section it produces:

* ``benchmark_models``: full-resolution evaluation of runs and bundles on the validation brains (1 mm Dice,
  HD95, folding, time, memory): the full-resolution tables of "Distillation" (*Full resolution*, *A teacher
  that is clearly better*), "Low-resolution model by cross-resolution distillation" (*Full resolution*,
  *Giving the 4 mm network its 2 mm detail*), "Curricula" and "Continual learning" (*The comparison*).
* ``known_answer_report``: grid Dice plus the known-answer error of networks:
  "Precision training (issue 24)".
* ``distill_scale``: size of the flow-distillation term against the similarity term:
  "Distillation" > *Students*.
* ``distill_capacity``: the student fitted to single pairs of the refined teacher:
  "Distillation" > *What limits the student*.
* ``warp_probe``: does a network follow a known deformation of the fixed image:
  "Distillation" > *What limits the student*.
* ``curriculum_report``: the curriculum ablation's table and plots: "Curricula (issue 9)".
* ``lowres_ceiling``: how much accuracy a low-resolution flow can carry: "Low-resolution model by
  cross-resolution distillation" > *The ablation, warm-started* and *How far can a 4 mm student go here?*.
* ``continual_report``: accuracy matrices, ACC / BWT table and plot of continual runs: "Continual learning
  across tasks (issue 12)" (*Metrics*, *The comparison*, *A universal bundle*, *Earlier short runs*).
* ``refine_tasks``: per-pair refinement on every continual task (and a card's tried refinement,
  ``--update-card``): "Continual learning across tasks" > *The comparison* and *A universal bundle*.
* ``similarity_switch``: the former training losses against the engine's similarity registry on the
  default model's network: "Precision training" > *One similarity for training and refinement*.

The long sections themselves (distillation, curricula, CRD, continual learning) are in ``docs/results/``;
``training/RESULTS.md`` keeps the current work and a summary of each.
"""
