"""Running twistd processes on loopback ports for integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.request

from bnproxy.testing.processes import TWISTD, free_port, stop, wait_listening

__all__ = ["TWISTD", "free_port", "get_json", "post_json", "twistd", "wait_listening"]


@contextlib.contextmanager
def twistd(*args: str, port: int, cwd: str, env: dict | None = None):
    """``twistd -n ARGS`` until the block ends (SIGTERM, then SIGKILL)."""
    log = open(os.path.join(cwd, f"twistd-{port}.log"), "w+")
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", *args], cwd=cwd, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        stop(proc)
        log.seek(0)
        proc.log_text = log.read()
        log.close()


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post_json(url: str, body: dict | None = None, timeout: float = 10.0):
    req = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())
