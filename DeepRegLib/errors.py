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
