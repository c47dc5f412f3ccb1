"""The errors ftkit turns into exit codes: 2 for bad input, 3 for a guard stop.

Anything a user can get wrong raises ``UsageError`` with one line that names
the culprit and says what is expected; the CLI prints that line and exits 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FtkitError(Exception):
    exit_code = 1


class UsageError(FtkitError):
    """Bad input: an unknown name, a value out of range, a broken file."""

    exit_code = 2


class PluginError(UsageError):
    """A plugin that cannot be loaded or that clashes with another."""


class GuardStop(FtkitError):
    """A guard stopped training (baseline guard, non-finite gradients)."""

    exit_code = 3


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, known: Iterable[str]) -> UsageError:
    known = sorted(known)
    return UsageError(
        f"unknown {kind} '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}"
    )
