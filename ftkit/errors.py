"""The errors ftkit turns into exit codes: 2 for bad input.

Anything a user can get wrong raises ``UsageError`` with one line that names
the culprit and says what is expected; the CLI prints that line and exits 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FtkitError(Exception):
    exit_code = 1

    def __init__(self, message: str = "") -> None:
        super().__init__(_from_worker(message, type(self).__name__))


def _from_worker(message: str, name: str) -> str:
    """A DataLoader worker's error comes back as ``type(text)`` with the worker's
    whole traceback as its text (torch's ``ExceptionWrapper.reraise``): keep the
    original one line, which the traceback ends with."""
    if not (message.startswith(f"Caught {name} in DataLoader worker") and "Traceback" in message):
        return message
    last = message.rstrip().splitlines()[-1]
    return last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last


class UsageError(FtkitError):
    """Bad input: an unknown name, a value out of range, a broken file."""

    exit_code = 2


class WriteError(FtkitError, OSError):
    """A file ftkit had to write could not be (a full disk, a vanished folder):
    one line naming it and the free space, exit 1."""


class PluginError(UsageError):
    """A plugin that cannot be loaded or that clashes with another."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


# Beyond this many names the list stops being readable on one line (timm knows ~1,300 models).
LONG_LIST = 30


def unknown(kind: str, name: str, known: Iterable[str], *, ordered: bool = False) -> UsageError:
    """The error for an unknown name. ``ordered`` keeps the given order where it
    means something (a model's layer groups, from input to output); otherwise
    the names are sorted. A long list shows only the closest few and its size."""
    known = list(known) if ordered else sorted(known)
    hint = did_you_mean(name, known)
    if len(known) <= LONG_LIST:
        return UsageError(f"unknown {kind} '{name}'{hint}; known: {', '.join(known)}")
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.0)
    return UsageError(
        f"unknown {kind} '{name}'{hint}; {len(known):,} known, closest: {', '.join(close)}"
    )
