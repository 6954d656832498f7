"""A pytest fixture for plugin authors: ``fake_exchange``.

Add ``pytest_plugins = ["bnproxy.testing.pytest_plugin"]`` to a ``conftest.py``
(needs pytest-twisted). The fixture starts a ``FakeExchange`` on an ephemeral
loopback port of the running reactor and yields a
:class:`bnproxy.testing.fake.run.RunningExchange`. Only this module needs pytest:
runtime code imports ``bnproxy.testing.fake.run``.
"""

from __future__ import annotations

import pytest

from bnproxy.testing.fake.run import RunningExchange, start_exchange

__all__ = ["RunningExchange", "fake_exchange", "start_exchange"]


@pytest.fixture
def fake_exchange():
    from twisted.internet import reactor

    running = start_exchange(reactor)
    yield running
    running.exchange.stop()
    if running.exchange.port is not None:
        running.exchange.port.stopListening()
