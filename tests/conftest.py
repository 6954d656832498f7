import os
import sys

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

sys.path.insert(0, os.path.dirname(__file__))

from redis_server import redis_server  # noqa: F401 (a fixture)

pytest_plugins = ["bnproxy.testing.pytest_plugin"]

# Examples are not kept between runs: tests write nothing outside tmp_path
# (hypothesis's default database is ./.hypothesis).
settings.register_profile("bnproxy", database=None)
settings.load_profile("bnproxy")


def pytest_configure(config):
    """Hypothesis's own files (a constants cache, written while collecting)
    under pytest's temporary directory, not ./.hypothesis."""
    factory = pytest.TempPathFactory.from_config(config, _ispytest=True)
    set_hypothesis_home_dir(factory.mktemp("hypothesis"))


@pytest.fixture(autouse=True)
def _state_dirs_under_tmp_path(request):
    """helpers.Harness and streamhelpers keep state under the test's tmp_path
    (created only when asked for), never in /tmp directly."""
    import helpers

    helpers.tmp_path_of_test = lambda: request.getfixturevalue("tmp_path")
    yield
    helpers.tmp_path_of_test = None


@pytest.fixture
def rig():
    """A ``streamhelpers.VirtualRig`` (the fake exchange and a proxy with
    streams and cache, in virtual time), stopped after the test."""
    from streamhelpers import VirtualRig

    made = VirtualRig()
    yield made
    made.stop()
