"""The exceptions of the shared state."""

from __future__ import annotations


class SharedStateUnavailableError(Exception):
    """The shared store could not answer (not connected, connection lost,
    an error reply)."""


class SharedStateTimeoutError(SharedStateUnavailableError):
    """The shared store did not answer within its deadline."""
