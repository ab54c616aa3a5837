"""Exception types. Every error the library raises on bad input is one of these."""

from __future__ import annotations


class ContextDistillError(Exception):
    """Base class for every error context-distill raises on purpose."""


class InvalidMessageError(ContextDistillError, ValueError):
    """A message (or a history) the library cannot accept; the text says which and why."""


class InvalidThreadIdError(ContextDistillError, ValueError):
    """A thread id that is not a non-empty string of valid Unicode."""


class InputFormatError(ContextDistillError, ValueError):
    """A session file the command line cannot read; the text names the line."""


class StoreError(ContextDistillError):
    """The archive cannot be opened or written (wrong file, newer schema, disk full)."""


class MissingExtraError(ContextDistillError, ImportError):
    """An optional feature needs packages that are not installed; the text names the extra."""
