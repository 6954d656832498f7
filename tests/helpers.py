"""Test helpers: bnproxy.testing.harness, with each harness's state
directory under the running test's ``tmp_path`` (see conftest.py)."""

from __future__ import annotations

from pathlib import Path

from bnproxy.testing import harness as _harness
from bnproxy.testing.harness import (
    API_KEY,
    DEFAULT,
    SECRET,
    UPSTREAM_HOSTS,
    Answer,
    FakeResponse,
    RecordingUpstream,
    Seen,
    chain,
    controlled_agent,
    raw_exchange,
    sign,
    verify_hmac,
)

__all__ = ["API_KEY", "DEFAULT", "SECRET", "UPSTREAM_HOSTS", "Answer", "FakeResponse",
           "Harness", "RecordingUpstream", "Seen", "chain", "controlled_agent",
           "raw_exchange", "sign", "state_dir", "verify_hmac"]

# Set by conftest.py's autouse fixture: a callable giving the test's tmp_path.
tmp_path_of_test = None


def state_dir() -> str:
    """A fresh directory under the running test's ``tmp_path``."""
    if tmp_path_of_test is None:
        raise RuntimeError("helpers.state_dir() outside a test")
    root: Path = tmp_path_of_test()
    n = sum(1 for p in root.iterdir() if p.name.startswith("state-"))
    path = root / f"state-{n}"
    path.mkdir()
    return str(path)


class Harness(_harness.Harness):
    """:class:`bnproxy.testing.harness.Harness` whose ``state_dir`` defaults
    to a directory under the test's ``tmp_path``."""

    def __init__(self, upstream=None, agent=None, clock=None, **config) -> None:
        if "state_dir" not in config:  # (setdefault would make one anyway)
            config["state_dir"] = state_dir()
        super().__init__(upstream, agent, clock, **config)
