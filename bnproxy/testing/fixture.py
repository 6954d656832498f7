"""Moved to :mod:`bnproxy.testing.pytest_plugin`; this path re-exports for
one release (``pytest_plugins = ["bnproxy.testing.fixture"]`` keeps working)."""

from bnproxy.testing.pytest_plugin import RunningExchange, fake_exchange, start_exchange

__all__ = ["RunningExchange", "fake_exchange", "start_exchange"]
