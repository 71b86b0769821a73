"""Exceptions raised by the engine. Messages are written for the end user."""


class DeepRegError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(DeepRegError, ValueError):
    """Bad input: missing file, wrong dimensionality, empty or non-finite image."""


class ModelNotFoundError(DeepRegError, KeyError):
    """A model name that no bundle provides."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class Cancelled(DeepRegError):
    """The caller's ``cancel()`` returned True: the registration was stopped (nothing was produced)."""


class DeepRegWarning(UserWarning):
    """Base class of the engine's warnings (the CLI prints them as ``deepreg: warning: ...``)."""


class InputWarning(DeepRegWarning):
    """Input that is usable but suspicious (extreme voxel values that were clipped, ...)."""


class ModelWarning(DeepRegWarning):
    """A model bundle that was skipped (a broken card in ``$DEEPREG_MODELS_PATH``, ...), or a model's licence
    notice (shown once)."""
