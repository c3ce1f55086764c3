"""Errors that stop the server, each rendered as one line for the person starting it."""

from __future__ import annotations


class ListenError(OSError):
    """A listener could not bind: the address is in use, not ours, or not allowed."""
