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

__all__ = ["RunningExchange", "fake_exchange", "fake_exchange_tls", "start_exchange"]


@pytest.fixture
def fake_exchange():
    from twisted.internet import reactor

    running = start_exchange(reactor)
    yield running
    running.stop()


@pytest.fixture
def fake_exchange_tls(tmp_path):
    """The fake exchange over https/wss; ``.ca_file`` is the throwaway CA
    (under the test's ``tmp_path``) a client must trust."""
    from twisted.internet import reactor

    running = start_exchange(reactor, tls=True, tls_dir=tmp_path / "fake-exchange-tls")
    yield running
    running.stop()
