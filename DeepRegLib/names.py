"""Looking up a name among the options a setting allows, with one kind of error for every setting."""
from __future__ import annotations

import difflib
from typing import Iterable, Type, TypeVar

T = TypeVar("T")


def look_up_option(name: T, options: Iterable[T], what: str, error: Type[Exception] = ValueError) -> T:
    """``name`` if it is one of ``options``; otherwise ``error`` naming the options and the closest one.

    Args:
        name: the value asked for (a string in every use here).
        options: the allowed values (a dict's keys, a tuple, ...).
        what: what the name names, for the message ("model", "refinement similarity", ...).
        error: the exception class to raise (the caller's: :class:`ValueError`, ``InputError``, ...).

    Returns:
        ``name`` itself.

    Raises:
        error: ``unknown {what} 'x'; expected one of a, b, c (did you mean 'b'?)``.
    """
    allowed = list(options)
    if name in allowed:
        return name
    text = [str(o) for o in allowed]
    close = difflib.get_close_matches(str(name), text, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise error(f"unknown {what} {name!r}; expected one of {', '.join(text)}{hint}")
