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
