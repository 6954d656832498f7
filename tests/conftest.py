import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from redis_server import redis_server  # noqa: E402,F401 (a fixture)

pytest_plugins = ["bnproxy.testing.pytest_plugin"]
