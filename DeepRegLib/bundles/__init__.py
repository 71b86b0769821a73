"""Model bundles: a network's weights with the card that says how to use them.

- :mod:`.bundle`: reading cards and weights (:func:`load_bundle`, :func:`list_models`, ...);
- :mod:`.taskspec`: a card's grid, normalisation and affine stage (:class:`TaskSpec`);
- :mod:`.licence`: the licence notice a user accepts once per bundle;
- :mod:`.domain`: warnings when an image pair is not what the model was trained for;
- :mod:`.preflight`: the licence and domain checks every entry point runs before any work.

This package needs no torch; only building a network imports it.
"""
from .bundle import (CARD_FILE, DEFAULT_MODEL, KINDS, REFINEMENT_KEY, TASK_KEYS, TASK_SETTINGS_KEY,
                     ModelBundle, card_full_refinement, card_refinement, check_card, confined_weights, list_models, load_bundle, model_dirs,
                     pickle_globals, split_reference, update_card, with_task)

__all__ = ["CARD_FILE", "DEFAULT_MODEL", "KINDS", "REFINEMENT_KEY", "TASK_KEYS", "TASK_SETTINGS_KEY",
           "ModelBundle", "card_refinement", "card_full_refinement", "check_card", "confined_weights", "list_models", "load_bundle", "model_dirs",
           "pickle_globals", "split_reference", "update_card", "with_task"]
