"""Scale-out settings: refused at start-up in one line."""

import pytest
from twisted.internet import task

from bnproxy.app import build_proxy
from bnproxy.config.model import ProxyConfig
from bnproxy.config.reader import ConfigError
from bnproxy.tap import Options


def config(args):
    options = Options()
    options.parseOptions(list(args))
    return options.config({})


def test_scale_settings_from_the_command_line():
    c = config(["--shared-state", "redis://127.0.0.1:6379/2", "--egress", "127.0.0.2",
                "--egress", "127.0.0.3", "--workers", "2", "--shared-state-min-instances", "3"])
    assert c.shared_state == "redis://127.0.0.1:6379/2"
    assert c.egress == ("127.0.0.2", "127.0.0.3")
    assert (c.workers, c.shared_state_min_instances, c.shared_state_deadline) == (2, 3, 0.05)
    assert config([]).shared_state == ""


def test_a_shared_state_that_is_not_redis_is_refused():
    with pytest.raises(SystemExit) as e:
        config(["--shared-state", "http://127.0.0.1:6379"])
    assert "shared-state" in str(e.value) and "\n" not in str(e.value)


def test_an_egress_address_this_host_does_not_own_is_refused(tmp_path):
    # 192.0.2.0/24 is TEST-NET-1: never an address of this host
    with pytest.raises(ConfigError, match="192.0.2.7 is not an address of this host"):
        build_proxy(ProxyConfig(listen=(), state_dir=str(tmp_path), egress=("192.0.2.7",),
                                middleware=()), task.Clock())


def test_each_egress_address_gets_its_own_agent(tmp_path):
    proxy = build_proxy(ProxyConfig(
        listen=(), state_dir=str(tmp_path), egress=("127.0.0.2", "127.0.0.3"),
        middleware=(("ratelimit", {}),)), task.Clock())
    assert proxy.context.egresses == ("127.0.0.2", "127.0.0.3")
    assert set(proxy.upstream._egress_agents) == {"127.0.0.2", "127.0.0.3"}
    assert proxy.middlewares[0].governor.egresses == ("127.0.0.2", "127.0.0.3")


def test_a_workers_command_line_runs_in_the_foreground_without_a_pid_file():
    from bnproxy.app import worker_argv

    assert worker_argv(["/v/twistd", "--logfile", "x", "bnproxy", "--workers", "2"]) == [
        "/v/twistd", "--logfile", "x", "--nodaemon", "--pidfile=", "bnproxy", "--workers", "2"]
    assert worker_argv(["/v/twistd", "-y", "bnproxy.tac"]) == [
        "/v/twistd", "--nodaemon", "--pidfile=", "-y", "bnproxy.tac"]


@pytest.mark.parametrize("args,message", [
    (["--shared-state", "redis://127.0.0.1:0/0"], "port must be from 1 to 65535, not 0"),
    (["--shared-state", "redis://127.0.0.1:6379/" + "1" + "0" * 20],
     "database must be from 0 to 2147483646"),
    (["--shared-state-min-instances", "1000000000"], "must be at most 256"),
    (["--egress", "0.0.0.0"], "0.0.0.0 is the unspecified address"),
    (["--egress", "::"], ":: is the unspecified address"),
    (["--egress", "[::]"], "is the unspecified address"),
    (["--egress", "::ffff:0.0.0.0"], "is the unspecified address"),
    (["--egress", "224.0.0.1"], "is a multicast address"),
    (["--egress", "127.0.0.2", "--egress", "127.0.0.2"], "127.0.0.2 is given twice"),
    (["--egress", "127.0.0.2", "--egress", "::ffff:127.0.0.2"], "127.0.0.2 is given twice"),
    (["--egress", "eth0"], "'eth0' is not an IP address"),
])
def test_scale_options_that_cannot_work_are_refused_in_one_line(args, message):
    with pytest.raises(SystemExit) as e:
        config(args)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_scale_options_are_refused_from_the_environment_and_the_file_too(tmp_path):
    from bnproxy.config import sources
    with pytest.raises(ConfigError, match="BNPROXY_EGRESS: 0.0.0.0 is the unspecified"):
        sources.resolve({}, {"BNPROXY_EGRESS": "0.0.0.0"})
    path = tmp_path / "bnproxy.toml"
    path.write_text('egress = ["127.0.0.2", "127.0.0.2"]\n')
    with pytest.raises(ConfigError, match="egress: 127.0.0.2 is given twice"):
        sources.resolve({"config": str(path)}, {})
