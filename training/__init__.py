"""Reproduces how DeepReg's bundled networks were made (data, teachers, distillation, curricula)."""
