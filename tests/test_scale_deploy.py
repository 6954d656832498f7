"""deploy/docker-compose.scale.yml names real options."""

import json
import os
import re

from bnproxy.tap import Options

COMPOSE = os.path.join(os.path.dirname(__file__), "..", "deploy", "docker-compose.scale.yml")


def test_the_scale_compose_file_command_is_accepted():
    text = open(COMPOSE).read()
    # the bnproxy service's command: a JSON-style list, possibly over several lines
    m = re.search(r"  bnproxy:.*?\n    command: (\[.*?\])\n", text, re.S)
    assert m, "no command for the bnproxy service"
    argv = json.loads(re.sub(r"\s+", " ", m.group(1)))
    env = dict(re.findall(r"\n      (BNPROXY_[A-Z_]+): \"?([^\"\n]*)\"?", text))
    options = Options()
    options.parseOptions(argv)
    config = options.config(env)
    assert config.shared_state == "redis://redis:6379/0"
    assert config.shared_state_min_instances == 2


DEPLOY = os.path.dirname(COMPOSE)


def grace_seconds(compose: str) -> float:
    m = re.search(r"\n  bnproxy:\n(?:    .*\n|\n)*?    stop_grace_period: (\d+)s", compose)
    assert m, "no stop_grace_period for the bnproxy service"
    return float(m.group(1))


def test_every_grace_period_outlasts_the_drain():
    """Docker's and systemd's SIGKILL come after --drain-timeout plus the
    second a stop takes beyond it (workers included), with a margin."""
    scale = open(COMPOSE).read()
    m = re.search(r"  bnproxy:.*?\n    command: (\[.*?\])\n", scale, re.S)
    assert m
    options = Options()
    options.parseOptions(json.loads(re.sub(r"\s+", " ", m.group(1))))
    drain = options.config({}).server.drain_timeout
    assert drain + 1 < grace_seconds(scale) <= drain + 10

    single = open(os.path.join(DEPLOY, "docker-compose.yml")).read()
    env = dict(re.findall(r"\n      (BNPROXY_[A-Z_]+): \"?([^\"\n]*)\"?", single))
    options = Options()
    options.parseOptions([])
    drain = options.config(env).server.drain_timeout
    assert drain + 1 < grace_seconds(single) <= drain + 10

    unit = open(os.path.join(DEPLOY, "bnproxy.service")).read()  # the default drain
    stop_sec = float(re.search(r"\nTimeoutStopSec=(\d+)", unit).group(1))
    assert options.config({}).server.drain_timeout + 1 < stop_sec
